/**
 * One viewer mounted in a [data-mirc-viewer] element: series browser, one or two stack
 * viewports (the second compares with a prior exam), tools, presets, cine, overlays.
 * This class holds the viewer's state and loads studies and series; each concern lives in
 * its module (page, panel, tools, keyboard, layout, cine, prefetch, series, protocol).
 * The live shared review (review.js) drives it through getView/applyView and its events.
 */
import { Enums as csEnums, RenderingEngine, eventTarget } from '@cornerstonejs/core';

import { DicomWeb } from '../dicomweb.js';
import { makeTranslator } from '../labels.js';
import { listenKeyboard } from './keyboard.js';
import { resizeViewports } from './layout.js';
import { buildPage, describeError } from './page.js';
import { PrefetchTiming } from './prefetch.js';
import { showViewInPanel, toProtocolAnnotation, viewOfPanel } from './protocol.js';
import { renderSeriesBrowser } from './series.js';
import { createToolGroup, destroyToolGroup, localAnnotations, setTool } from './tools.js';

const { Events } = csEnums;

let viewerCount = 0;

export class Viewer {
  constructor(root, config) {
    viewerCount += 1;
    this.number = viewerCount;
    this.root = root;
    this.config = config || {};
    this.t = makeTranslator(this.config.labels);
    this.web = new DicomWeb(this.config.dicomweb);
    this.studies = Array.isArray(this.config.studies) ? this.config.studies : [];
    this.mountedAt = performance.now();
    this.timings = { firstImageMs: null, prefetchMs: null, prefetchTotal: 0, prefetchLoaded: 0 };
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.activeTool = 'WindowLevel';
    this.activePanel = 0;
    this.layout = 1;
    this.panels = [];
    this._handlers = { view: new Set(), userView: new Set(), series: new Set() };
    this.prefetch = new PrefetchTiming(this);
    this.review = null;
  }

  // --- events for review.js ---------------------------------------------------------------

  /** name: 'view' (viewport 1 changed), 'userView' (the user changed viewport 1 themselves),
   * 'series' (a series was displayed in a viewport). */
  on(name, handler) {
    this._handlers[name].add(handler);
    return () => this._handlers[name].delete(handler);
  }

  _emit(name, detail) {
    for (const handler of this._handlers[name]) {
      try {
        handler(detail);
      } catch (error) {
        console.error(error);
      }
    }
  }

  /** Called before any change the user makes to a viewport's view (scroll, window, zoom...). */
  userChangedView(panelIndex = this.activePanel) {
    if (panelIndex === 0) this._emit('userView', {});
  }

  // --- mounting ------------------------------------------------------------------------------

  async mount() {
    buildPage(this);
    this.engine = new RenderingEngine(`mirc-engine-${this.number}`);
    this.toolGroup = createToolGroup(this);
    this.enablePanel(0);
    this._wireGlobalEvents();
    if (!this.studies.length) {
      this.panels[0].showError(this.t('errorNoStudy'));
      this._rejectReady(new Error('no study'));
      return;
    }
    try {
      await this.openStudy(0, this.studies[0].uid);
    } finally {
      // A view received from the room while the first series was loading is shown now.
      this._initialLoadDone = true;
      if (this._pendingView && !this._applying) this._applyLoop();
    }
  }

  enablePanel(index) {
    const panel = this.panels[index];
    if (panel.enabled) return;
    this.engine.enableElement({
      viewportId: panel.viewportId,
      type: csEnums.ViewportType.STACK,
      element: panel.element,
      defaultOptions: { background: [0, 0, 0] },
    });
    this.toolGroup.addViewport(panel.viewportId, this.engine.id);
    panel.enabled = true;
    panel.wire();
  }

  _wireGlobalEvents() {
    this.prefetch.listen();
    this._onLoadError = (event) => {
      const detail = event.detail;
      const items = Array.isArray(detail) ? detail : [detail];
      for (const item of items) {
        for (const panel of this.panels) panel.onLoadError(item?.imageId, item?.error);
      }
    };
    eventTarget.addEventListener(Events.IMAGE_LOAD_ERROR, this._onLoadError);
    eventTarget.addEventListener(Events.IMAGE_LOAD_FAILED, this._onLoadError);
    this._stopKeyboard = listenKeyboard(this);
    this._resizeObserver = new ResizeObserver(() => resizeViewports(this));
    this._resizeObserver.observe(this.grid);
  }

  // --- studies and series --------------------------------------------------------------------

  get panel() {
    return this.panels[this.activePanel];
  }

  studyLabel(uid) {
    return this.studies.find((s) => s.uid === uid)?.label || '';
  }

  describeError(error) {
    return describeError(this.t, error);
  }

  async openStudy(panelIndex, studyUid, { series = null, index = 0 } = {}) {
    const panel = this.panels[panelIndex];
    panel.studyUid = studyUid;
    panel.updateHead();
    if (panelIndex === this.activePanel) renderSeriesBrowser(this);
    let list;
    try {
      panel.showLoading();
      list = await this.web.listSeries(studyUid);
    } catch (error) {
      panel.showError(this.describeError(error), () => this.openStudy(panelIndex, studyUid, { series, index }));
      if (panelIndex === 0) this._rejectReady(error);
      return false;
    }
    if (panel.studyUid !== studyUid) return false;
    if (panelIndex === this.activePanel) renderSeriesBrowser(this);
    const chosen = (series && list.find((s) => s.uid === series)) || list.find((s) => s.count > 0) || list[0];
    if (!chosen) {
      panel.showError(this.t('errorNoImages'));
      if (panelIndex === 0) this._rejectReady(new Error('no images'));
      return false;
    }
    return this.loadSeries(panelIndex, studyUid, chosen.uid, index);
  }

  async loadSeries(panelIndex, studyUid, seriesUid, index = 0) {
    const panel = this.panels[panelIndex];
    if (!panel.enabled) this.enablePanel(panelIndex);
    const ok = await panel.load(studyUid, seriesUid, index);
    if (ok) {
      if (panelIndex === this.activePanel) renderSeriesBrowser(this);
      if (panelIndex === 0) this.prefetch.start(panel);
      this._emit('series', { panel: panelIndex, study: studyUid, series: seriesUid });
      if (panelIndex === 0) this._emit('view', {});
    } else if (panelIndex === 0 && !this.timings.firstImageMs) {
      this._rejectReady(new Error('load failed'));
    }
    return ok;
  }

  _firstImageShown() {
    if (this.timings.firstImageMs === null) {
      this.timings.firstImageMs = Math.round(performance.now() - this.mountedAt);
      this._resolveReady(true);
    }
  }

  setTool(name) {
    return setTool(this, name);
  }

  renderAll() {
    try {
      this.engine.render();
    } catch (error) {
      console.warn(error);
    }
  }

  // --- the view state of viewport 1 (docs/review-protocol.md) ---------------------------------

  getView() {
    return viewOfPanel(this.panels[0]);
  }

  /** Shows a view received from the presenter in viewport 1 (loading its series if needed). */
  applyView(view) {
    this._pendingView = view;
    if (this._initialLoadDone && !this._applying) this._applyLoop();
  }

  async _applyLoop() {
    this._applying = true;
    try {
      while (this._pendingView) {
        const view = this._pendingView;
        this._pendingView = null;
        const panel = this.panels[0];
        if (panel.studyUid !== view.study || panel.seriesUid !== view.series || !panel.ready) {
          const ok = panel.studyUid === view.study
            ? await this.loadSeries(0, view.study, view.series, view.index)
            : await this.openStudy(0, view.study, { series: view.series, index: view.index });
          if (!ok) continue;
          if (this.activePanel === 0) renderSeriesBrowser(this);
        }
        if (this._pendingView) continue;
        await showViewInPanel(panel, view);
      }
    } catch (error) {
      console.error(error);
    } finally {
      this._applying = false;
    }
  }

  // --- annotations -----------------------------------------------------------------------------

  localAnnotations() {
    return localAnnotations(this);
  }

  ownsImageId(imageId) {
    return Boolean(imageId) && imageId.startsWith(`wadors:${this.web.root}/`);
  }

  getAnnotations() {
    return this.localAnnotations().map(toProtocolAnnotation).filter(Boolean);
  }

  destroy() {
    this.prefetch.stop();
    eventTarget.removeEventListener(Events.IMAGE_LOAD_ERROR, this._onLoadError);
    eventTarget.removeEventListener(Events.IMAGE_LOAD_FAILED, this._onLoadError);
    this._stopKeyboard?.();
    this._resizeObserver?.disconnect();
    this.review?.close();
    destroyToolGroup(this.toolGroup);
    this.engine.destroy();
  }
}
