/**
 * One viewer mounted in a [data-mirc-viewer] element: series browser, one or two stack
 * viewports (the second compares with a prior exam), tools, presets, cine, overlays.
 * The live shared review (review.js) drives it through getView/applyView and its events.
 */
import {
  Enums as csEnums,
  RenderingEngine,
  cache,
  eventTarget,
  metaData,
  utilities as csUtils,
} from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';

import { DicomWeb, DicomWebError, parseImageId } from './dicomweb.js';
import { KeyImageButton } from './keyimage.js';
import { el, makeTranslator } from './labels.js';

const { ToolGroupManager, Enums: toolEnums, annotation: csAnnotation } = csTools;
const { MouseBindings } = toolEnums;
const { Events } = csEnums;
const { toWindowLevel, toLowHighRange } = csUtils.windowLevel;

export const ANNOTATION_TOOLS = ['Length', 'Angle', 'RectangleROI', 'EllipticalROI', 'ArrowAnnotate'];
const NAVIGATION_TOOLS = ['WindowLevel', 'Pan', 'Zoom'];
export const PRIMARY_TOOLS = [...NAVIGATION_TOOLS, ...ANNOTATION_TOOLS];
export const TOOL_CLASSES = {
  WindowLevel: csTools.WindowLevelTool,
  Pan: csTools.PanTool,
  Zoom: csTools.ZoomTool,
  StackScroll: csTools.StackScrollTool,
  Length: csTools.LengthTool,
  Angle: csTools.AngleTool,
  RectangleROI: csTools.RectangleROITool,
  EllipticalROI: csTools.EllipticalROITool,
  ArrowAnnotate: csTools.ArrowAnnotateTool,
};
const TOOL_KEYS = {
  WindowLevel: 'w',
  Pan: 'p',
  Zoom: 'z',
  Length: 'l',
  Angle: 'a',
  RectangleROI: 'r',
  EllipticalROI: 'e',
  ArrowAnnotate: 't',
};

/** CT window presets, width / level in HU (shared/reference/domain.md, "Imaging"). */
export const PRESETS = [
  { key: 'lung', ww: 1500, wc: -600 },
  { key: 'mediastinum', ww: 350, wc: 50 },
  { key: 'abdomen', ww: 400, wc: 50 },
  { key: 'liver', ww: 150, wc: 30 },
  { key: 'bone', ww: 2000, wc: 500 },
  { key: 'brain', ww: 80, wc: 40 },
  { key: 'stroke', ww: 40, wc: 40 },
];

const DEFAULT_STACK_FPS = 10;
const round = (value, digits = 2) => {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};
const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

let viewerCount = 0;
let currentViewer = null;

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
    this._prefetch = null;
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
    this._buildDom();
    this.engine = new RenderingEngine(`mirc-engine-${this.number}`);
    this.toolGroup = this._createToolGroup();
    this._enablePanel(0);
    this._wireGlobalEvents();
    currentViewer = currentViewer || this;
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

  _buildDom() {
    const t = this.t;
    this.root.replaceChildren();
    this.root.classList.add('mv');
    this.root.setAttribute('role', 'region');
    this.root.setAttribute('aria-label', t('viewerTitle'));

    const toolButtons = PRIMARY_TOOLS.map((name) =>
      el('button', {
        type: 'button',
        class: 'mv-btn',
        dataset: { testid: `tool-${name}`, tool: name },
        title: `${t(`tool${name}`)} (${TOOL_KEYS[name].toUpperCase()})`,
        'aria-pressed': name === this.activeTool ? 'true' : 'false',
        onclick: () => this.setTool(name),
      }, t(`tool${name}`)),
    );
    const presetButtons = PRESETS.map((preset, i) =>
      el('button', {
        type: 'button',
        class: 'mv-btn',
        dataset: { testid: `preset-${preset.key}`, preset: preset.key },
        title: t('presetTitle', { name: t(`preset_${preset.key}`), ww: preset.ww, wc: preset.wc, key: i + 1 }),
        onclick: () => this.applyPreset(preset.key),
      }, t(`preset_${preset.key}`)),
    );
    this.cineButton = el('button', {
      type: 'button', class: 'mv-btn', dataset: { testid: 'cine-toggle' },
      'aria-pressed': 'false', title: `${t('cinePlay')} (${t('keySpace')})`,
      onclick: () => this.toggleCine(),
    }, t('cinePlay'));
    this.fpsInput = el('input', {
      type: 'number', min: 1, max: 60, step: 1, value: DEFAULT_STACK_FPS, class: 'mv-fps',
      dataset: { testid: 'cine-fps' }, 'aria-label': t('cineFps'), title: t('cineFps'),
      onchange: () => this._restartCineIfPlaying(),
    });
    this.layoutButton = el('button', {
      type: 'button', class: 'mv-btn', dataset: { testid: 'layout-compare' }, 'aria-pressed': 'false',
      title: `${t('layoutCompare')} (C)`, onclick: () => this.setLayout(this.layout === 1 ? 2 : 1),
      disabled: this.studies.length < 1,
    }, t('layoutCompare'));
    this.helpButton = el('button', {
      type: 'button', class: 'mv-btn', dataset: { testid: 'help-toggle' }, 'aria-expanded': 'false',
      title: `${t('help')} (?)`, onclick: () => this.toggleHelp(),
    }, t('help'));

    // An RCP case's page lets the user mark the image shown as a key image (keyimage.js).
    this.keyImages = this.config.keyImages?.url ? new KeyImageButton(this, this.config.keyImages) : null;
    const toolbar = el('div', { class: 'mv-toolbar', role: 'toolbar', 'aria-label': t('toolbar') },
      el('div', { class: 'mv-group', role: 'group', 'aria-label': t('groupTools') }, toolButtons),
      el('div', { class: 'mv-group', role: 'group', 'aria-label': t('groupPresets') }, presetButtons),
      el('div', { class: 'mv-group', role: 'group', 'aria-label': t('groupView') },
        el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'reset' }, title: `${t('reset')} (X)`, onclick: () => this.resetView() }, t('reset')),
        el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'invert' }, title: `${t('invert')} (I)`, onclick: () => this.invert() }, t('invert')),
        el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'rotate' }, title: `${t('rotate')} (O)`, onclick: () => this.rotate() }, t('rotate')),
        el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'flip' }, title: `${t('flipH')} (H)`, onclick: () => this.flipH() }, t('flipH')),
        el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'clear-annotations' }, title: t('clearAnnotations'), onclick: () => this.clearAnnotations() }, t('clearAnnotations')),
      ),
      el('div', { class: 'mv-group', role: 'group', 'aria-label': t('groupCine') }, this.cineButton,
        el('label', { class: 'mv-fps-label' }, this.fpsInput, t('fpsUnit'))),
      el('div', { class: 'mv-group', role: 'group' }, this.layoutButton, this.helpButton),
      this.keyImages?.node,
    );
    this.toolbar = toolbar;

    this.helpPopover = el('div', {
      class: 'mv-help', role: 'dialog', 'aria-label': t('helpTitle'), hidden: true,
      dataset: { testid: 'help-popover' },
    }, el('h3', {}, t('helpTitle')), this._shortcutList(),
    el('button', { type: 'button', class: 'mv-btn', onclick: () => this.toggleHelp(false) }, t('close')));

    this.reviewBar = el('div', { class: 'mv-review', hidden: true });
    this.seriesHead = el('div', { class: 'mv-series-head' });
    this.seriesList = el('ul', { class: 'mv-series-list', dataset: { testid: 'series-browser' } });
    const aside = el('aside', { class: 'mv-series', 'aria-label': t('seriesBrowser') }, this.seriesHead, this.seriesList);
    this.grid = el('div', { class: 'mv-grid', dataset: { layout: '1' } });
    for (let i = 0; i < 2; i += 1) this.panels.push(new Panel(this, i));
    this.grid.append(...this.panels.map((p) => p.node));
    this.textDialog = new TextDialog(this.t);
    this.notices = el('div', { class: 'mv-notices' });
    this.root.append(toolbar, this.reviewBar, el('div', { class: 'mv-body' }, aside, this.grid, this.notices), this.helpPopover, this.textDialog.node);
  }

  _shortcutList() {
    const t = this.t;
    const rows = [
      ['↑ ↓ ← →', t('keyScroll')],
      [`${t('keyPageUp')} / ${t('keyPageDown')}`, t('keyScrollTen')],
      [`${t('keyHome')} / ${t('keyEnd')}`, t('keyFirstLast')],
      [t('keyWheel'), t('keyScroll')],
      ...PRIMARY_TOOLS.map((name) => [TOOL_KEYS[name].toUpperCase(), t(`tool${name}`)]),
      ...PRESETS.map((p, i) => [String(i + 1), t(`preset_${p.key}`)]),
      ['0', t('presetDefault')],
      [t('keySpace'), t('cinePlay')],
      ['X', t('reset')],
      ['I', t('invert')],
      ['O', t('rotate')],
      ['H', t('flipH')],
      ['C', t('layoutCompare')],
      [t('keyDelete'), t('deleteAnnotation')],
      [t('keyMouseMiddle'), t('toolPan')],
      [t('keyMouseRight'), t('toolZoom')],
      ['F', t('followAgain')],
      ['?', t('help')],
    ];
    return el('dl', { class: 'mv-keys' }, rows.flatMap(([key, what]) => [el('dt', {}, el('kbd', {}, key)), el('dd', {}, what)]));
  }

  _createToolGroup() {
    const group = ToolGroupManager.createToolGroup(`mirc-tools-${this.number}`);
    for (const name of Object.keys(TOOL_CLASSES)) {
      const options = name === 'ArrowAnnotate'
        ? {
          getTextCallback: (done) => this.textDialog.ask('', done),
          changeTextCallback: (data, eventData, done) => this.textDialog.ask(data?.data?.label || '', done),
        }
        : {};
      group.addTool(TOOL_CLASSES[name].toolName, options);
    }
    for (const name of ANNOTATION_TOOLS) group.setToolPassive(TOOL_CLASSES[name].toolName);
    group.setToolActive(csTools.WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    group.setToolActive(csTools.PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    group.setToolActive(csTools.ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    group.setToolActive(csTools.StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    return group;
  }

  _enablePanel(index) {
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
    this._onImageLoaded = (event) => this._countPrefetched(event.detail?.image?.imageId);
    eventTarget.addEventListener(Events.IMAGE_LOADED, this._onImageLoaded);
    this._onLoadError = (event) => {
      const detail = event.detail;
      const items = Array.isArray(detail) ? detail : [detail];
      for (const item of items) {
        for (const panel of this.panels) panel.onLoadError(item?.imageId, item?.error);
      }
    };
    eventTarget.addEventListener(Events.IMAGE_LOAD_ERROR, this._onLoadError);
    eventTarget.addEventListener(Events.IMAGE_LOAD_FAILED, this._onLoadError);

    // Capture phase: Cornerstone's own listener on the viewport element cancels every key.
    this._onKey = (event) => this._keydown(event);
    document.addEventListener('keydown', this._onKey, true);
    this.root.addEventListener('pointerdown', () => {
      currentViewer = this;
    }, true);
    this.root.addEventListener('focusin', () => {
      currentViewer = this;
    });
    this._resizeObserver = new ResizeObserver(() => this._resize());
    this._resizeObserver.observe(this.grid);
  }

  _resize() {
    if (this._resizePending) return;
    this._resizePending = requestAnimationFrame(() => {
      this._resizePending = null;
      try {
        // Zoom is relative to the image fitted in its viewport and pan is in image pixels
        // (as in the review protocol): keep both across a change of viewport size.
        const kept = this.panels.filter((p) => p.ready).map((p) => [p, p.viewport.getZoom(), p.panInImagePixels(p.viewport.getCurrentImageId())]);
        this.engine.resize(true, true);
        for (const [panel, zoom, pan] of kept) {
          panel.viewport.setZoom(zoom);
          panel.setPanInImagePixels(pan);
          panel.viewport.render();
        }
        for (const panel of this.panels) panel.updateOverlay();
      } catch (error) {
        console.warn(error);
      }
    });
  }

  // --- studies and series --------------------------------------------------------------------

  studyLabel(uid) {
    return this.studies.find((s) => s.uid === uid)?.label || '';
  }

  async openStudy(panelIndex, studyUid, { series = null, index = 0 } = {}) {
    const panel = this.panels[panelIndex];
    panel.studyUid = studyUid;
    panel.updateHead();
    if (panelIndex === this.activePanel) this._renderSeriesBrowser();
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
    if (panelIndex === this.activePanel) this._renderSeriesBrowser();
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
    if (!panel.enabled) this._enablePanel(panelIndex);
    const ok = await panel.load(studyUid, seriesUid, index);
    if (ok) {
      if (panelIndex === this.activePanel) this._renderSeriesBrowser();
      if (panelIndex === 0) this._startPrefetchTiming(panel);
      this._emit('series', { panel: panelIndex, study: studyUid, series: seriesUid });
      if (panelIndex === 0) this._emit('view', {});
    } else if (panelIndex === 0 && !this.timings.firstImageMs) {
      this._rejectReady(new Error('load failed'));
    }
    return ok;
  }

  async _renderSeriesBrowser() {
    const panel = this.panels[this.activePanel];
    const study = panel.studyUid;
    const t = this.t;
    this.seriesHead.replaceChildren(
      el('strong', {}, this.layout === 2 ? t('viewportN', { n: this.activePanel + 1 }) : t('seriesBrowser')),
      el('span', { class: 'mv-muted' }, this.studyLabel(study)),
    );
    if (!study) {
      this.seriesList.replaceChildren();
      return;
    }
    let list;
    try {
      list = await this.web.listSeries(study);
    } catch (error) {
      this.seriesList.replaceChildren(el('li', { class: 'mv-muted' }, this.describeError(error)));
      return;
    }
    if (this.panels[this.activePanel].studyUid !== study) return;
    this.seriesList.replaceChildren(...list.map((series) => {
      const img = el('img', { alt: '', loading: 'lazy', decoding: 'async', width: 96, height: 96 });
      const missing = () => img.replaceWith(el('span', { class: 'mv-thumb-missing' }, series.modality));
      img.addEventListener('error', missing);
      this.web.thumbnailSrc(study, series.uid).then((src) => { img.src = src; }, missing);
      const current = panel.seriesUid === series.uid;
      return el('li', {},
        el('button', {
          type: 'button', class: 'mv-series-item', 'aria-current': current ? 'true' : 'false',
          dataset: { testid: 'series-item', series: series.uid },
          onclick: () => {
            if (this.activePanel === 0) this.userChangedView(0);
            this.loadSeries(this.activePanel, study, series.uid, 0);
          },
        },
        img,
        el('span', { class: 'mv-series-text' },
          el('span', {}, t('seriesLine', { number: series.number, modality: series.modality })),
          el('span', { class: 'mv-muted' }, series.description),
          el('span', { class: 'mv-muted' }, t('imageCount', { count: series.count }))),
        ));
    }));
  }

  setActivePanel(index) {
    if (index === this.activePanel || index >= this.layout) return;
    this.activePanel = index;
    for (const panel of this.panels) panel.node.classList.toggle('mv-active', panel.index === index);
    this._renderSeriesBrowser();
    this._syncCineButton();
  }

  setLayout(layout) {
    this.layout = layout === 2 ? 2 : 1;
    this.grid.dataset.layout = String(this.layout);
    this.layoutButton.setAttribute('aria-pressed', this.layout === 2 ? 'true' : 'false');
    this.panels[1].node.hidden = this.layout !== 2;
    if (this.layout === 2) {
      this._enablePanel(1);
      this._resize();
      const second = this.panels[1];
      if (!second.studyUid) {
        const prior = this.studies.find((s) => s.uid !== this.panels[0].studyUid) || this.studies[0];
        if (prior) this.openStudy(1, prior.uid);
      }
      this.setActivePanel(1);
    } else {
      this.panels[1].stopCine();
      this.setActivePanel(0);
      this._resize();
    }
    for (const panel of this.panels) panel.node.classList.toggle('mv-active', this.layout === 2 && panel.index === this.activePanel);
  }

  describeError(error) {
    const status = error instanceof DicomWebError ? error.status : statusOf(error);
    if (status === 404) return this.t('errorNotFound');
    if (status === 401 || status === 403) return this.t('errorForbidden');
    if (status === 502 || status === 503 || status === 504) return this.t('errorUnavailable');
    if (status === 0) return this.t('errorNetwork');
    if (status) return this.t('errorStatus', { status });
    return this.t('errorLoad');
  }

  // --- prefetch timing -------------------------------------------------------------------------

  _startPrefetchTiming(panel) {
    const ids = panel.stack.imageIds;
    this._prefetch = { ids: new Set(ids), loaded: new Set(), started: performance.now() };
    this.timings.prefetchTotal = ids.length;
    this.timings.prefetchMs = null;
    for (const id of ids) if (cache.isLoaded(id)) this._prefetch.loaded.add(id);
    this.timings.prefetchLoaded = this._prefetch.loaded.size;
    this._checkPrefetchDone();
  }

  _countPrefetched(imageId) {
    const state = this._prefetch;
    if (!state || !imageId || !state.ids.has(imageId) || state.loaded.has(imageId)) return;
    state.loaded.add(imageId);
    this.timings.prefetchLoaded = state.loaded.size;
    this.panels[0].updateProgress(state.loaded.size, state.ids.size);
    this._checkPrefetchDone();
  }

  _checkPrefetchDone() {
    const state = this._prefetch;
    if (state && state.loaded.size >= state.ids.size && this.timings.prefetchMs === null) {
      this.timings.prefetchMs = Math.round(performance.now() - this.mountedAt);
      this.panels[0].updateProgress(state.ids.size, state.ids.size);
    }
  }

  _firstImageShown() {
    if (this.timings.firstImageMs === null) {
      this.timings.firstImageMs = Math.round(performance.now() - this.mountedAt);
      this._resolveReady(true);
    }
  }

  // --- tools, presets, view changes ------------------------------------------------------------

  setTool(name) {
    if (!PRIMARY_TOOLS.includes(name)) return false;
    const group = this.toolGroup;
    const previous = this.activeTool;
    if (previous !== name) {
      group.setToolPassive(TOOL_CLASSES[previous].toolName);
      group.setToolActive(TOOL_CLASSES[name].toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
      this.activeTool = name;
    }
    for (const button of this.toolbar.querySelectorAll('[data-tool]')) {
      button.setAttribute('aria-pressed', button.dataset.tool === name ? 'true' : 'false');
    }
    return true;
  }

  get panel() {
    return this.panels[this.activePanel];
  }

  applyPreset(key) {
    const panel = this.panel;
    if (!panel.ready) return;
    this.userChangedView(panel.index);
    if (key === 'default') {
      panel.resetVoi();
      return;
    }
    const preset = PRESETS.find((p) => p.key === key);
    if (preset) panel.setVoi(preset.ww, preset.wc);
  }

  resetView() {
    const panel = this.panel;
    if (!panel.ready) return;
    this.userChangedView(panel.index);
    panel.reset();
  }

  invert() {
    const panel = this.panel;
    if (!panel.ready) return;
    const { invert } = panel.viewport.getProperties();
    panel.viewport.setProperties({ invert: !invert });
    panel.viewport.render();
  }

  rotate() {
    const panel = this.panel;
    if (!panel.ready) return;
    this.userChangedView(panel.index);
    const rotation = (normalizedRotation(panel.viewport) + 90) % 360;
    panel.viewport.setViewPresentation({ rotation });
    panel.viewport.render();
  }

  flipH() {
    const panel = this.panel;
    if (!panel.ready) return;
    this.userChangedView(panel.index);
    const { flipHorizontal } = panel.viewport.getCamera();
    panel.viewport.setViewPresentation({ flipHorizontal: !flipHorizontal });
    panel.viewport.render();
  }

  scroll(delta, { absolute = false } = {}) {
    const panel = this.panel;
    if (!panel.ready) return;
    this.userChangedView(panel.index);
    const total = panel.stack.imageIds.length;
    const target = absolute ? delta : panel.viewport.getCurrentImageIdIndex() + delta;
    panel.setIndex(clamp(target, 0, total - 1));
  }

  toggleCine(play) {
    const panel = this.panel;
    if (!panel.ready) return;
    const playing = play ?? !panel.cinePlaying;
    if (playing) {
      this.userChangedView(panel.index);
      panel.playCine(this.fps());
    } else {
      panel.stopCine();
    }
    this._syncCineButton();
  }

  fps() {
    return clamp(Number(this.fpsInput.value) || DEFAULT_STACK_FPS, 1, 60);
  }

  _restartCineIfPlaying() {
    this.fpsInput.value = String(this.fps());
    if (this.panel.cinePlaying) this.panel.playCine(this.fps());
  }

  _syncCineButton() {
    const playing = this.panel.cinePlaying;
    this.cineButton.setAttribute('aria-pressed', playing ? 'true' : 'false');
    this.cineButton.textContent = playing ? this.t('cinePause') : this.t('cinePlay');
  }

  toggleHelp(open) {
    const show = open ?? this.helpPopover.hidden;
    this.helpPopover.hidden = !show;
    this.helpButton.setAttribute('aria-expanded', show ? 'true' : 'false');
  }

  /** Removes the measurements this user may change (a follower's room annotations are locked). */
  clearAnnotations() {
    const uids = this.localAnnotations()
      .map((a) => a.annotationUID)
      .filter((uid) => !csAnnotation.locking.isAnnotationLocked(uid));
    for (const uid of uids) csAnnotation.state.removeAnnotation(uid);
    this.renderAll();
  }

  deleteSelectedAnnotation() {
    const selected = csAnnotation.selection.getAnnotationsSelected() || [];
    for (const annotation of selected) {
      if (!csAnnotation.locking.isAnnotationLocked(annotation.annotationUID)) {
        csAnnotation.state.removeAnnotation(annotation.annotationUID);
      }
    }
    this.renderAll();
  }

  renderAll() {
    try {
      this.engine.render();
    } catch (error) {
      console.warn(error);
    }
  }

  _keydown(event) {
    if (currentViewer !== this || event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target instanceof HTMLElement && (target.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName))) return;
    if (!this.textDialog.node.hidden) return;
    const key = event.key;
    const handled = () => event.preventDefault();
    switch (key) {
      case 'ArrowUp':
      case 'ArrowLeft':
        handled();
        this.scroll(-1);
        return;
      case 'ArrowDown':
      case 'ArrowRight':
        handled();
        this.scroll(1);
        return;
      case 'PageUp':
        handled();
        this.scroll(-10);
        return;
      case 'PageDown':
        handled();
        this.scroll(10);
        return;
      case 'Home':
        handled();
        this.scroll(0, { absolute: true });
        return;
      case 'End':
        handled();
        this.scroll(Number.MAX_SAFE_INTEGER, { absolute: true });
        return;
      case ' ':
        if (target instanceof HTMLButtonElement) return;
        handled();
        this.toggleCine();
        return;
      case 'Delete':
      case 'Backspace':
        handled();
        this.deleteSelectedAnnotation();
        return;
      case '?':
        handled();
        this.toggleHelp();
        return;
      case 'Escape':
        if (!this.helpPopover.hidden) {
          handled();
          this.toggleHelp(false);
        }
        return;
      default:
        break;
    }
    const lower = key.toLowerCase();
    const tool = Object.keys(TOOL_KEYS).find((name) => TOOL_KEYS[name] === lower);
    if (tool) {
      handled();
      this.setTool(tool);
      return;
    }
    if (/^[0-9]$/.test(key)) {
      const preset = key === '0' ? { key: 'default' } : PRESETS[Number(key) - 1];
      if (preset) {
        handled();
        this.applyPreset(preset.key);
      }
      return;
    }
    const actions = {
      x: () => this.resetView(),
      i: () => this.invert(),
      o: () => this.rotate(),
      h: () => this.flipH(),
      c: () => this.setLayout(this.layout === 1 ? 2 : 1),
      f: () => this.review?.followAgain(),
    };
    if (actions[lower]) {
      handled();
      actions[lower]();
    }
  }

  // --- the view state of viewport 1 (docs/review-protocol.md) ---------------------------------

  getView() {
    const panel = this.panels[0];
    if (!panel.ready) return null;
    const viewport = panel.viewport;
    const imageId = viewport.getCurrentImageId();
    const { voiRange } = viewport.getProperties();
    let voi = { ww: 1, wc: 0 };
    if (voiRange) {
      const { windowWidth, windowCenter } = toWindowLevel(voiRange.lower, voiRange.upper);
      voi = { ww: round(clamp(windowWidth, 0.01, 1e6)), wc: round(clamp(windowCenter, -1e7, 1e7)) };
    }
    const camera = viewport.getCamera();
    return {
      study: panel.studyUid,
      series: panel.seriesUid,
      index: viewport.getCurrentImageIdIndex(),
      voi,
      zoom: round(clamp(viewport.getZoom() || 1, 0.01, 64), 4),
      pan: panel.panInImagePixels(imageId).map((v) => round(clamp(v, -1e7, 1e7))),
      rotation: normalizedRotation(viewport),
      flipH: Boolean(camera.flipHorizontal),
      flipV: Boolean(camera.flipVertical),
      pointer: null,
    };
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
          if (this.activePanel === 0) this._renderSeriesBrowser();
        }
        if (this._pendingView) continue;
        await panel.showView(view);
      }
    } catch (error) {
      console.error(error);
    } finally {
      this._applying = false;
    }
  }

  // --- annotations -----------------------------------------------------------------------------

  localAnnotations() {
    return (csAnnotation.state.getAllAnnotations() || []).filter((a) =>
      ANNOTATION_TOOLS.includes(a.metadata?.toolName) && this.ownsImageId(a.metadata?.referencedImageId),
    );
  }

  ownsImageId(imageId) {
    return Boolean(imageId) && imageId.startsWith(`wadors:${this.web.root}/`);
  }

  getAnnotations() {
    return this.localAnnotations().map(toProtocolAnnotation).filter(Boolean);
  }

  destroy() {
    eventTarget.removeEventListener(Events.IMAGE_LOADED, this._onImageLoaded);
    eventTarget.removeEventListener(Events.IMAGE_LOAD_ERROR, this._onLoadError);
    eventTarget.removeEventListener(Events.IMAGE_LOAD_FAILED, this._onLoadError);
    document.removeEventListener('keydown', this._onKey, true);
    this._resizeObserver?.disconnect();
    this.review?.close();
    ToolGroupManager.destroyToolGroup(this.toolGroup.id);
    this.engine.destroy();
  }
}

/** One viewport of the viewer, with its overlay, slider and status box. */
class Panel {
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
      this.viewer.setActivePanel(this.index);
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
    this.node.addEventListener('pointerdown', () => viewer.setActivePanel(this.index), true);
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
    this.stopCine();
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
    csTools.utilities.stackPrefetch.disable(this.element);
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
    viewer.fpsInput.value = String(stack.frameRate || DEFAULT_STACK_FPS);
    this.clearStatus();
    this.updateOverlay();
    csTools.utilities.stackPrefetch.enable(this.element);
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

  playCine(fps) {
    if (!this.ready || this.stack.imageIds.length < 2) return;
    csTools.utilities.cine.playClip(this.element, { framesPerSecond: fps, loop: true });
    this.cinePlaying = true;
  }

  stopCine() {
    if (this.cinePlaying && this.enabled) {
      try {
        csTools.utilities.cine.stopClip(this.element);
      } catch (error) {
        console.warn(error);
      }
    }
    this.cinePlaying = false;
  }

  /** The view's pan in image pixels: how far the image centre is from the viewport centre. */
  panInImagePixels(imageId) {
    const image = this.viewport.getCornerstoneImage?.();
    try {
      const focal = csUtils.worldToImageCoords(imageId, this.viewport.getCamera().focalPoint);
      return [image.columns / 2 - focal[0], image.rows / 2 - focal[1]];
    } catch {
      return [0, 0];
    }
  }

  setPanInImagePixels(pan) {
    const viewport = this.viewport;
    const imageId = viewport.getCurrentImageId();
    const image = viewport.getCornerstoneImage?.();
    if (!image) return;
    let target;
    try {
      target = csUtils.imageToWorldCoords(imageId, [image.columns / 2 - pan[0], image.rows / 2 - pan[1]]);
    } catch {
      return;
    }
    const camera = viewport.getCamera();
    const normal = camera.viewPlaneNormal;
    const { focalPoint, position } = camera;
    // Keep the focal point's depth along the view normal; move it within the image plane.
    const depth = (focalPoint[0] - target[0]) * normal[0] + (focalPoint[1] - target[1]) * normal[1] + (focalPoint[2] - target[2]) * normal[2];
    const newFocal = [0, 1, 2].map((i) => target[i] + depth * normal[i]);
    const shift = [0, 1, 2].map((i) => newFocal[i] - focalPoint[i]);
    viewport.setCamera({
      focalPoint: newFocal,
      position: [0, 1, 2].map((i) => position[i] + shift[i]),
    });
  }

  async showView(view) {
    const viewport = this.viewport;
    const total = this.stack.imageIds.length;
    const index = clamp(view.index, 0, total - 1);
    if (viewport.getCurrentImageIdIndex() !== index) {
      try {
        await viewport.setImageIdIndex(index);
      } catch (error) {
        this.showError(this.viewer.describeError(error));
        return;
      }
    }
    viewport.setViewPresentation({
      rotation: view.rotation || 0,
      flipHorizontal: Boolean(view.flipH),
      flipVertical: Boolean(view.flipV),
    });
    if (view.voi) viewport.setProperties({ voiRange: toLowHighRange(view.voi.ww, view.voi.wc) });
    if (view.zoom) viewport.setZoom(view.zoom);
    if (view.pan) this.setPanInImagePixels(view.pan);
    viewport.render();
    this.showPointer(view.pointer);
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

/** The text of an arrow annotation, asked in the page (no window.prompt, no hard-coded text). */
class TextDialog {
  constructor(t) {
    this.input = el('input', { type: 'text', maxlength: 200, class: 'mv-text-input', dataset: { testid: 'annotation-text' }, 'aria-label': t('annotationText') });
    this.node = el('form', { class: 'mv-dialog', hidden: true, dataset: { testid: 'annotation-dialog' } },
      el('label', {}, t('annotationText'), this.input),
      el('div', { class: 'mv-dialog-buttons' },
        el('button', { type: 'submit', class: 'mv-btn', dataset: { testid: 'annotation-ok' } }, t('ok')),
        el('button', { type: 'button', class: 'mv-btn', onclick: () => this._finish(null) }, t('cancel'))));
    this.node.addEventListener('submit', (event) => {
      event.preventDefault();
      this._finish(this.input.value.slice(0, 200));
    });
    this.node.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') this._finish(null);
      event.stopPropagation();
    });
  }

  ask(initial, done) {
    if (this._done) this._finish(null);
    this._done = done;
    this.input.value = initial || '';
    this.node.hidden = false;
    this.input.focus();
  }

  _finish(value) {
    const done = this._done;
    this._done = null;
    this.node.hidden = true;
    if (done) done(value ?? '');
  }
}

function statusOf(error) {
  if (!error) return undefined;
  if (typeof error.status === 'number') return error.status;
  if (typeof error.request?.status === 'number') return error.request.status;
  if (typeof error.error?.status === 'number') return error.error.status;
  return undefined;
}

function normalizedRotation(viewport) {
  const rotation = Number(viewport.getViewPresentation({ rotation: true }).rotation) || 0;
  return ((Math.round(rotation / 90) * 90) % 360 + 360) % 360;
}

function formatDicomDate(value) {
  const text = String(value || '');
  return /^\d{8}$/.test(text) ? `${text.slice(6, 8)}/${text.slice(4, 6)}/${text.slice(0, 4)}` : text;
}

/** A Cornerstone annotation in the protocol's form, or null if it cannot be expressed. */
export function toProtocolAnnotation(annotation) {
  const tool = annotation?.metadata?.toolName;
  const ids = parseImageId(annotation?.metadata?.referencedImageId);
  const points = annotation?.data?.handles?.points;
  if (!ANNOTATION_TOOLS.includes(tool) || !ids || !Array.isArray(points) || !points.length) return null;
  return {
    uid: annotation.annotationUID,
    tool,
    study: ids.study,
    series: ids.series,
    sop: ids.sop,
    frame: ids.frame,
    points: points.slice(0, 8).map((p) => [0, 1, 2].map((i) => round(clamp(Number(p[i]) || 0, -1e7, 1e7), 3))),
    text: String(annotation.data?.label || annotation.data?.text || '').slice(0, 200),
  };
}

/** Adds or replaces an annotation received from the room in Cornerstone's state. */
export function upsertProtocolAnnotation(viewer, proto) {
  const imageId = viewer.web.imageId(proto.study, proto.series, proto.sop, proto.frame || 1);
  const plane = metaData.get('imagePlaneModule', imageId);
  if (!plane) return false;
  const points = proto.points.map((p) => [Number(p[0]), Number(p[1]), Number(p[2])]);
  const existing = csAnnotation.state.getAnnotation(proto.uid);
  if (existing) {
    existing.data.handles.points = points;
    existing.data.label = proto.text || '';
    existing.invalidated = true;
    return true;
  }
  const row = plane.rowCosines || [1, 0, 0];
  const col = plane.columnCosines || [0, 1, 0];
  const normal = [
    row[1] * col[2] - row[2] * col[1],
    row[2] * col[0] - row[0] * col[2],
    row[0] * col[1] - row[1] * col[0],
  ];
  const ToolClass = TOOL_CLASSES[proto.tool];
  const created = ToolClass.createAnnotation({
    annotationUID: proto.uid,
    highlighted: false,
    metadata: {
      toolName: ToolClass.toolName,
      FrameOfReferenceUID: plane.frameOfReferenceUID,
      referencedImageId: imageId,
      viewPlaneNormal: normal,
      viewUp: [-col[0], -col[1], -col[2]],
    },
    data: { handles: { points }, label: proto.text || '' },
  });
  created.annotationUID = proto.uid;
  // The group of an image shown in a viewport is the viewport's own (a DX has no frame of
  // reference); otherwise the frame of reference of the image.
  const shown = viewer.panels.find((p) => p.ready && p.stack?.imageIds.includes(imageId));
  if (shown) csAnnotation.state.addAnnotation(created, shown.element);
  else if (plane.frameOfReferenceUID) csAnnotation.state.addAnnotation(created, plane.frameOfReferenceUID);
  else return false;
  return true;
}
