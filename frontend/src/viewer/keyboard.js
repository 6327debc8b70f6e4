/**
 * Keyboard shortcuts and their help. A page may hold several viewers: keys go to the one the
 * user last pointed at or focused (the first mounted until then), and never while typing in a
 * field or the annotation text dialog.
 */
import { el } from '../labels.js';
import { toggleCine } from './cine.js';
import { clamp } from './geometry.js';
import { toggleLayout } from './layout.js';
import {
  PRESETS,
  PRIMARY_TOOLS,
  applyPreset,
  deleteSelectedAnnotation,
  flipH,
  invert,
  resetView,
  rotate,
  setTool,
} from './tools.js';

export const TOOL_KEYS = {
  WindowLevel: 'w',
  Pan: 'p',
  Zoom: 'z',
  Length: 'l',
  Angle: 'a',
  RectangleROI: 'r',
  EllipticalROI: 'e',
  ArrowAnnotate: 't',
};

let currentViewer = null;

/** The help's button and popover (viewer.helpButton, viewer.helpPopover). */
export function helpControls(viewer) {
  const t = viewer.t;
  viewer.helpButton = el('button', {
    type: 'button', class: 'mv-btn', dataset: { testid: 'help-toggle' }, 'aria-expanded': 'false',
    title: `${t('help')} (?)`, onclick: () => toggleHelp(viewer),
  }, t('help'));
  viewer.helpPopover = el('div', {
    class: 'mv-help', role: 'dialog', 'aria-label': t('helpTitle'), hidden: true,
    dataset: { testid: 'help-popover' },
  }, el('h3', {}, t('helpTitle')), shortcutList(t),
  el('button', { type: 'button', class: 'mv-btn', onclick: () => toggleHelp(viewer, false) }, t('close')));
  return viewer.helpButton;
}

export function toggleHelp(viewer, open) {
  const show = open ?? viewer.helpPopover.hidden;
  viewer.helpPopover.hidden = !show;
  viewer.helpButton.setAttribute('aria-expanded', show ? 'true' : 'false');
}

function shortcutList(t) {
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

/** Starts taking the keys for a viewer; returns what stops it. */
export function listenKeyboard(viewer) {
  currentViewer = currentViewer || viewer;
  // Capture phase: Cornerstone's own listener on the viewport element cancels every key.
  const onKey = (event) => keydown(viewer, event);
  document.addEventListener('keydown', onKey, true);
  viewer.root.addEventListener('pointerdown', () => {
    currentViewer = viewer;
  }, true);
  viewer.root.addEventListener('focusin', () => {
    currentViewer = viewer;
  });
  return () => document.removeEventListener('keydown', onKey, true);
}

/** Scrolls the active viewport's stack by delta images, or to image delta when absolute. */
function scroll(viewer, delta, { absolute = false } = {}) {
  const panel = viewer.panel;
  if (!panel.ready) return;
  viewer.userChangedView(panel.index);
  const total = panel.stack.imageIds.length;
  const target = absolute ? delta : panel.viewport.getCurrentImageIdIndex() + delta;
  panel.setIndex(clamp(target, 0, total - 1));
}

const SCROLL_KEYS = {
  ArrowUp: [-1],
  ArrowLeft: [-1],
  ArrowDown: [1],
  ArrowRight: [1],
  PageUp: [-10],
  PageDown: [10],
  Home: [0, { absolute: true }],
  End: [Number.MAX_SAFE_INTEGER, { absolute: true }],
};

const LETTER_ACTIONS = {
  x: resetView,
  i: invert,
  o: rotate,
  h: flipH,
  c: toggleLayout,
  f: (viewer) => viewer.review?.followAgain(),
};

function keydown(viewer, event) {
  if (currentViewer !== viewer || event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLElement && (target.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName))) return;
  if (!viewer.textDialog.node.hidden) return;
  const key = event.key;
  const handled = () => event.preventDefault();
  if (Object.hasOwn(SCROLL_KEYS, key)) {
    handled();
    scroll(viewer, ...SCROLL_KEYS[key]);
    return;
  }
  switch (key) {
    case ' ':
      if (target instanceof HTMLButtonElement) return;
      handled();
      toggleCine(viewer);
      return;
    case 'Delete':
    case 'Backspace':
      handled();
      deleteSelectedAnnotation(viewer);
      return;
    case '?':
      handled();
      toggleHelp(viewer);
      return;
    case 'Escape':
      if (!viewer.helpPopover.hidden) {
        handled();
        toggleHelp(viewer, false);
      }
      return;
    default:
      break;
  }
  const lower = key.toLowerCase();
  const tool = Object.keys(TOOL_KEYS).find((name) => TOOL_KEYS[name] === lower);
  if (tool) {
    handled();
    setTool(viewer, tool);
    return;
  }
  if (/^[0-9]$/.test(key)) {
    const preset = key === '0' ? { key: 'default' } : PRESETS[Number(key) - 1];
    if (preset) {
      handled();
      applyPreset(viewer, preset.key);
    }
    return;
  }
  if (Object.hasOwn(LETTER_ACTIONS, lower)) {
    handled();
    LETTER_ACTIONS[lower](viewer);
  }
}
