/**
 * One viewport of the viewer, with its overlay (patient, series, image, window, zoom), its
 * slider, its laser pointer and its status box (loading, errors with a retry).
 */
import { Enums as csEnums, utilities as csUtils } from '@cornerstonejs/core';

import { el } from '../labels.js';
import { showFrameRate, stopCine } from './cine.js';
import { clamp, round } from './geometry.js';
import { setActivePanel } from './layout.js';
import { prefetchStack } from './prefetch.js';
import { NAVIGATION_TOOLS } from './tools.js';

const { Events } = csEnums;
const { toWindowLevel, toLowHighRange } = csUtils.windowLevel;

export class Panel {
  constructor(viewer, index) {
    this.viewer = viewer;
    this.index = index;
    this.viewportId = `mirc-${viewer.number}-vp${index + 1}`;
    this.enabled = false;
    this.ready = false;
    this.stack = null;
    this.studyUid = null;
    this.seriesUid = null;
    this.loadToken = 0;
    this.cinePlaying = false;
    const t = viewer.t;
    const suffix = index === 0 ? '' : `-${index + 1}`;

    this.element = el('div', { class: 'mv-element', dataset: { testid: `viewport${suffix || '-1'}` } });
    this.element.addEventListener('contextmenu', (e) => e.preventDefault());
    this.overlay = {
      tl: el('div', { class: 'mv-ov mv-ov-tl', dataset: { testid: `overlay-tl${suffix}` } }),
      tr: el('div', { class: 'mv-ov mv-ov-tr', dataset: { testid: `overlay-tr${suffix}` } }),
      bl: el('div', { class: 'mv-ov mv-ov-bl', dataset: { testid: `overlay-bl${suffix}` } }),
      br: el('div', { class: 'mv-ov mv-ov-br', dataset: { testid: `overlay-br${suffix}` } }),
    };
    this.pointer = el('div', { class: 'mv-pointer', hidden: true, dataset: { testid: `pointer${suffix}` } });
    this.status = el('div', { class: 'mv-status', hidden: true, role: 'status', dataset: { testid: `viewport-status${suffix}` } });
    this.progress = el('div', { class: 'mv-progress', dataset: { testid: `prefetch-progress${suffix}` } });
    this.slider = el('input', {
      type: 'range', min: 0, max: 0, value: 0, step: 1, class: 'mv-slider', disabled: true,
      'aria-label': t('sliderLabel'), dataset: { testid: `slider${suffix}` },
    });
    this.slider.addEventListener('input', () => {
      if (!this.ready) return;
      setActivePanel(this.viewer, this.index);
      this.viewer.userChangedView(this.index);
      this.setIndex(Number(this.slider.value));
    });
    this.head = el('div', { class: 'mv-panel-head' });
    if (index === 1) {
      this.studySelect = el('select', {
        class: 'mv-study-select', 'aria-label': t('compareStudy'), dataset: { testid: 'compare-study' },
        onchange: () => viewer.openStudy(1, this.studySelect.value),
      }, viewer.studies.map((s) => el('option', { value: s.uid }, s.label || s.uid)));
    }
    const stage = el('div', { class: 'mv-stage' }, this.element, ...Object.values(this.overlay), this.pointer, this.progress, this.status);
    this.node = el('section', {
      class: 'mv-panel', hidden: index !== 0, 'aria-label': t('viewportN', { n: index + 1 }),
      dataset: { testid: `panel${suffix || '-1'}` },
    }, this.head, stage, this.slider);
    this.node.addEventListener('pointerdown', () => setActivePanel(viewer, this.index), true);
    this.updateHead();
  }

  get viewport() {
    return this.viewer.engine.getViewport(this.viewportId);
  }

  wire() {
    const element = this.element;
    const viewer = this.viewer;
    // A user's own gesture on viewport 1 (a follower detaches from the presenter).
    element.addEventListener('wheel', () => viewer.userChangedView(this.index), { capture: true, passive: true });
    element.addEventListener('pointerdown', (event) => {
      const navigating = event.button === 1 || event.button === 2 ||
        (event.button === 0 && NAVIGATION_TOOLS.includes(viewer.activeTool));
      if (navigating) viewer.userChangedView(this.index);
    }, true);
    const changed = () => {
      this.updateOverlay();
      if (this.index === 0) viewer._emit('view', {});
    };
    element.addEventListener(Events.CAMERA_MODIFIED, changed);
    element.addEventListener(Events.VOI_MODIFIED, changed);
    element.addEventListener(Events.STACK_NEW_IMAGE, () => {
      if (this.stack) this.slider.value = String(this.viewport.getCurrentImageIdIndex());
      changed();
    });
    element.addEventListener(Events.IMAGE_RENDERED, () => {
      if (!this.ready) return;
      this.clearStatus();
      if (this.index === 0) viewer._firstImageShown();
      this.updateOverlay();
    });
  }

  updateHead() {
    const viewer = this.viewer;
    if (this.index === 1) {
      if (this.studyUid) this.studySelect.value = this.studyUid;
      this.head.replaceChildren(el('span', { class: 'mv-muted' }, viewer.t('compareStudy')), this.studySelect);
    } else {
      this.head.replaceChildren(el('span', {}, viewer.studyLabel(this.studyUid)));
    }
  }

  async load(studyUid, seriesUid, index = 0) {
    const token = ++this.loadToken;
    const viewer = this.viewer;
    stopCine(this);
    this.ready = false;
    this.showLoading();
    let stack;
    try {
      stack = await viewer.web.loadStack(studyUid, seriesUid);
    } catch (error) {
      if (token === this.loadToken) this.showError(viewer.describeError(error), () => viewer.loadSeries(this.index, studyUid, seriesUid, index));
      return false;
    }
    if (token !== this.loadToken) return false;
    if (!stack.imageIds.length) {
      this.showError(viewer.t('errorNoImages'));
      return false;
    }
    prefetchStack(this, false);
    this.stack = stack;
    this.studyUid = studyUid;
    this.seriesUid = seriesUid;
    this.loadError = null;
    this.updateHead();
    const start = clamp(Number(index) || 0, 0, stack.imageIds.length - 1);
    try {
      await Promise.race([
        this.viewport.setStack(stack.imageIds, start),
        new Promise((resolve, reject) => {
          this._failLoad = reject;
        }),
      ]);
    } catch (error) {
      if (token === this.loadToken) {
        this.showError(viewer.describeError(error), () => viewer.loadSeries(this.index, studyUid, seriesUid, index));
      }
      return false;
    } finally {
      this._failLoad = null;
    }
    if (token !== this.loadToken) return false;
    this.ready = true;
    this.viewport.render();
    this.slider.max = String(stack.imageIds.length - 1);
    this.slider.value = String(start);
    this.slider.disabled = stack.imageIds.length < 2;
    showFrameRate(viewer, stack);
    this.clearStatus();
    this.updateOverlay();
    prefetchStack(this, true);
    return true;
  }

  onLoadError(imageId, error) {
    if (!imageId || !this.stack || !this.stack.imageIds.includes(imageId)) return;
    if (this._failLoad) {
      this._failLoad(error || new Error('image load failed'));
      return;
    }
    if (this.ready && this.viewport.getCurrentImageId() === imageId) {
      this.showError(this.viewer.describeError(error), () => this.setIndex(this.viewport.getCurrentImageIdIndex()));
    }
  }

  async setIndex(index) {
    if (!this.ready) return;
    try {
      await this.viewport.setImageIdIndex(index);
    } catch (error) {
      this.showError(this.viewer.describeError(error), () => this.setIndex(index));
    }
  }

  setVoi(ww, wc) {
    const viewport = this.viewport;
    viewport.setProperties({ voiRange: toLowHighRange(ww, wc) });
    viewport.render();
  }

  resetVoi() {
    this.viewport.resetProperties();
    this.viewport.render();
  }

  reset() {
    const viewport = this.viewport;
    viewport.resetProperties();
    viewport.setViewPresentation({ rotation: 0, flipHorizontal: false, flipVertical: false });
    viewport.resetCamera();
    viewport.render();
  }

  /** The laser pointer of the presenter, given in image pixels, or hidden when null. */
  showPointer(pointer) {
    this._pointer = pointer || null;
    this._placePointer();
  }

  _placePointer() {
    const pointer = this._pointer;
    if (!pointer || !this.ready) {
      this.pointer.hidden = true;
      return;
    }
    try {
      const world = csUtils.imageToWorldCoords(this.viewport.getCurrentImageId(), pointer);
      const [x, y] = this.viewport.worldToCanvas(world);
      this.pointer.style.transform = `translate(${x}px, ${y}px)`;
      this.pointer.hidden = false;
    } catch {
      this.pointer.hidden = true;
    }
  }

  /** Canvas (CSS pixel) position to image pixels, for the laser pointer. */
  canvasToImage(x, y) {
    if (!this.ready) return null;
    try {
      const world = this.viewport.canvasToWorld([x, y]);
      const [col, row] = csUtils.worldToImageCoords(this.viewport.getCurrentImageId(), world);
      return [round(col, 1), round(row, 1)];
    } catch {
      return null;
    }
  }

  updateOverlay() {
    if (!this.ready) return;
    const viewer = this.viewer;
    const t = viewer.t;
    const patient = viewer.config.patient || {};
    const viewport = this.viewport;
    const stack = this.stack;
    const index = viewport.getCurrentImageIdIndex();
    const { voiRange } = viewport.getProperties();
    const lines = (...items) => items.filter(Boolean).map((text) => el('div', {}, text));
    this.overlay.tl.replaceChildren(...lines(
      patient.name || stack.patientName,
      patient.birthDate && t('overlayBirth', { date: patient.birthDate, sex: patient.sex || '' }),
      patient.ipp && t('overlayIpp', { ipp: patient.ipp }),
    ));
    this.overlay.tr.replaceChildren(...lines(
      viewer.studyLabel(this.studyUid) || formatDicomDate(stack.studyDate),
      t('overlaySeries', { number: stack.seriesNumber, description: stack.seriesDescription }),
      stack.modality,
    ));
    let wl = '';
    if (voiRange) {
      const { windowWidth, windowCenter } = toWindowLevel(voiRange.lower, voiRange.upper);
      wl = t('overlayWindow', { ww: Math.round(windowWidth), wc: Math.round(windowCenter) });
    }
    this.overlay.bl.replaceChildren(...lines(
      t('overlayImage', { index: index + 1, total: stack.imageIds.length }),
      wl,
    ));
    this.overlay.br.replaceChildren(...lines(t('overlayZoom', { zoom: (viewport.getZoom() || 1).toFixed(2) })));
    this.overlay.bl.dataset.index = String(index);
    this._placePointer();
  }

  updateProgress(loaded, total) {
    if (!total || loaded >= total) {
      this.progress.hidden = true;
      return;
    }
    this.progress.hidden = false;
    this.progress.textContent = this.viewer.t('prefetchProgress', { loaded, total });
  }

  showLoading() {
    this.status.hidden = false;
    this.status.className = 'mv-status mv-loading';
    this.status.replaceChildren(el('span', {}, this.viewer.t('loading')));
  }

  showError(message, retry) {
    this.ready = this.ready && Boolean(retry);
    this.status.hidden = false;
    this.status.className = 'mv-status mv-error';
    this.status.setAttribute('role', 'alert');
    this.status.dataset.testid = this.index === 0 ? 'viewport-error' : `viewport-error-${this.index + 1}`;
    this.status.replaceChildren(
      el('strong', {}, this.viewer.t('errorTitle')),
      el('span', {}, message),
      retry ? el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'retry' }, onclick: () => retry() }, this.viewer.t('retry')) : null,
    );
  }

  clearStatus() {
    if (this.status.hidden) return;
    this.status.hidden = true;
    this.status.setAttribute('role', 'status');
    this.status.dataset.testid = this.index === 0 ? 'viewport-status' : `viewport-status-${this.index + 1}`;
    this.status.replaceChildren();
  }
}

function formatDicomDate(value) {
  const text = String(value || '');
  return /^\d{8}$/.test(text) ? `${text.slice(6, 8)}/${text.slice(4, 6)}/${text.slice(0, 4)}` : text;
}
