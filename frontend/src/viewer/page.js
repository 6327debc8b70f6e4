/**
 * The viewer's page: its toolbar, the series browser, the viewports' grid, the review bar and
 * notices (filled by review.js), the help and the annotation text dialog; and the words for
 * an error. Every text comes from the page's labels (labels.js).
 */
import { DicomWebError } from '../dicomweb.js';
import { KeyImageButton } from '../keyimage.js';
import { el } from '../labels.js';
import { cineControls } from './cine.js';
import { TOOL_KEYS, helpControls } from './keyboard.js';
import { layoutButton } from './layout.js';
import { Panel } from './panel.js';
import { seriesBrowser } from './series.js';
import {
  PRESETS,
  PRIMARY_TOOLS,
  applyPreset,
  clearAnnotations,
  flipH,
  invert,
  resetView,
  rotate,
  setTool,
} from './tools.js';

/** Builds the viewer's DOM in its root element and its two panels (the second hidden). */
export function buildPage(viewer) {
  const t = viewer.t;
  const root = viewer.root;
  root.replaceChildren();
  root.classList.add('mv');
  root.setAttribute('role', 'region');
  root.setAttribute('aria-label', t('viewerTitle'));

  const toolButtons = PRIMARY_TOOLS.map((name) =>
    el('button', {
      type: 'button',
      class: 'mv-btn',
      dataset: { testid: `tool-${name}`, tool: name },
      title: `${t(`tool${name}`)} (${TOOL_KEYS[name].toUpperCase()})`,
      'aria-pressed': name === viewer.activeTool ? 'true' : 'false',
      onclick: () => setTool(viewer, name),
    }, t(`tool${name}`)),
  );
  const presetButtons = PRESETS.map((preset, i) =>
    el('button', {
      type: 'button',
      class: 'mv-btn',
      dataset: { testid: `preset-${preset.key}`, preset: preset.key },
      title: t('presetTitle', { name: t(`preset_${preset.key}`), ww: preset.ww, wc: preset.wc, key: i + 1 }),
      onclick: () => applyPreset(viewer, preset.key),
    }, t(`preset_${preset.key}`)),
  );
  const viewButton = (testid, label, title, action) =>
    el('button', { type: 'button', class: 'mv-btn', dataset: { testid }, title, onclick: () => action(viewer) }, label);

  // An RCP case's page lets the user mark the image shown as a key image (keyimage.js).
  viewer.keyImages = viewer.config.keyImages?.url ? new KeyImageButton(viewer, viewer.config.keyImages) : null;
  viewer.toolbar = el('div', { class: 'mv-toolbar', role: 'toolbar', 'aria-label': t('toolbar') },
    el('div', { class: 'mv-group', role: 'group', 'aria-label': t('groupTools') }, toolButtons),
    el('div', { class: 'mv-group', role: 'group', 'aria-label': t('groupPresets') }, presetButtons),
    el('div', { class: 'mv-group', role: 'group', 'aria-label': t('groupView') },
      viewButton('reset', t('reset'), `${t('reset')} (X)`, resetView),
      viewButton('invert', t('invert'), `${t('invert')} (I)`, invert),
      viewButton('rotate', t('rotate'), `${t('rotate')} (O)`, rotate),
      viewButton('flip', t('flipH'), `${t('flipH')} (H)`, flipH),
      viewButton('clear-annotations', t('clearAnnotations'), t('clearAnnotations'), clearAnnotations),
    ),
    cineControls(viewer),
    el('div', { class: 'mv-group', role: 'group' }, layoutButton(viewer), helpControls(viewer)),
    viewer.keyImages?.node,
  );

  viewer.reviewBar = el('div', { class: 'mv-review', hidden: true });
  const aside = seriesBrowser(viewer);
  viewer.grid = el('div', { class: 'mv-grid', dataset: { layout: '1' } });
  for (let i = 0; i < 2; i += 1) viewer.panels.push(new Panel(viewer, i));
  viewer.grid.append(...viewer.panels.map((p) => p.node));
  viewer.textDialog = new TextDialog(t);
  viewer.notices = el('div', { class: 'mv-notices' });
  root.append(viewer.toolbar, viewer.reviewBar, el('div', { class: 'mv-body' }, aside, viewer.grid, viewer.notices), viewer.helpPopover, viewer.textDialog.node);
}

/** What a failed request or image means for the user. */
export function describeError(t, error) {
  const status = error instanceof DicomWebError ? error.status : statusOf(error);
  if (status === 404) return t('errorNotFound');
  if (status === 401 || status === 403) return t('errorForbidden');
  if (status === 502 || status === 503 || status === 504) return t('errorUnavailable');
  if (status === 0) return t('errorNetwork');
  if (status) return t('errorStatus', { status });
  return t('errorLoad');
}

function statusOf(error) {
  if (!error) return undefined;
  if (typeof error.status === 'number') return error.status;
  if (typeof error.request?.status === 'number') return error.request.status;
  if (typeof error.error?.status === 'number') return error.error.status;
  return undefined;
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
