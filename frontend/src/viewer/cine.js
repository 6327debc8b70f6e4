/**
 * Cine: plays the active viewport's stack in a loop at the frames per second of the toolbar
 * (the series' own rate when it has one), one clip per viewport.
 */
import * as csTools from '@cornerstonejs/tools';

import { el } from '../labels.js';
import { clamp } from './geometry.js';

export const DEFAULT_STACK_FPS = 10;

/** The toolbar's play button and frames-per-second field (viewer.cineButton, viewer.fpsInput). */
export function cineControls(viewer) {
  const t = viewer.t;
  viewer.cineButton = el('button', {
    type: 'button', class: 'mv-btn', dataset: { testid: 'cine-toggle' },
    'aria-pressed': 'false', title: `${t('cinePlay')} (${t('keySpace')})`,
    onclick: () => toggleCine(viewer),
  }, t('cinePlay'));
  viewer.fpsInput = el('input', {
    type: 'number', min: 1, max: 60, step: 1, value: DEFAULT_STACK_FPS, class: 'mv-fps',
    dataset: { testid: 'cine-fps' }, 'aria-label': t('cineFps'), title: t('cineFps'),
    onchange: () => restartCineIfPlaying(viewer),
  });
  return el('div', { class: 'mv-group', role: 'group', 'aria-label': t('groupCine') }, viewer.cineButton,
    el('label', { class: 'mv-fps-label' }, viewer.fpsInput, t('fpsUnit')));
}

/** Plays (true), stops (false) or toggles (undefined) the active viewport's cine. */
export function toggleCine(viewer, play) {
  const panel = viewer.panel;
  if (!panel.ready) return;
  const playing = play ?? !panel.cinePlaying;
  if (playing) {
    viewer.userChangedView(panel.index);
    playCine(panel, cineFps(viewer));
  } else {
    stopCine(panel);
  }
  syncCineButton(viewer);
}

/** A series' own frame rate becomes the toolbar's. */
export function showFrameRate(viewer, stack) {
  viewer.fpsInput.value = String(stack.frameRate || DEFAULT_STACK_FPS);
}

function cineFps(viewer) {
  return clamp(Number(viewer.fpsInput.value) || DEFAULT_STACK_FPS, 1, 60);
}

function restartCineIfPlaying(viewer) {
  viewer.fpsInput.value = String(cineFps(viewer));
  if (viewer.panel.cinePlaying) playCine(viewer.panel, cineFps(viewer));
}

export function syncCineButton(viewer) {
  const playing = viewer.panel.cinePlaying;
  viewer.cineButton.setAttribute('aria-pressed', playing ? 'true' : 'false');
  viewer.cineButton.textContent = playing ? viewer.t('cinePause') : viewer.t('cinePlay');
}

export function playCine(panel, fps) {
  if (!panel.ready || panel.stack.imageIds.length < 2) return;
  csTools.utilities.cine.playClip(panel.element, { framesPerSecond: fps, loop: true });
  panel.cinePlaying = true;
}

export function stopCine(panel) {
  if (panel.cinePlaying && panel.enabled) {
    try {
      csTools.utilities.cine.stopClip(panel.element);
    } catch (error) {
      console.warn(error);
    }
  }
  panel.cinePlaying = false;
}
