/**
 * Prefetch: Cornerstone reads ahead the whole stack of a shown series; viewport 1's progress
 * shows in its corner and lands in viewer.timings (first image, whole series cached), which
 * the browser tests and the README's figures read.
 */
import { Enums as csEnums, cache, eventTarget } from '@cornerstonejs/core';
import * as csTools from '@cornerstonejs/tools';

const { Events } = csEnums;

/** Reads ahead the stack of a panel (off while another series loads into it). */
export function prefetchStack(panel, on) {
  const { stackPrefetch } = csTools.utilities;
  if (on) stackPrefetch.enable(panel.element);
  else stackPrefetch.disable(panel.element);
}

export class PrefetchTiming {
  constructor(viewer) {
    this.viewer = viewer;
    this.state = null;
    this._onImageLoaded = (event) => this.count(event.detail?.image?.imageId);
  }

  listen() {
    eventTarget.addEventListener(Events.IMAGE_LOADED, this._onImageLoaded);
  }

  stop() {
    eventTarget.removeEventListener(Events.IMAGE_LOADED, this._onImageLoaded);
  }

  /** A series shown in viewport 1: count its images from those already cached. */
  start(panel) {
    const timings = this.viewer.timings;
    const ids = panel.stack.imageIds;
    this.state = { ids: new Set(ids), loaded: new Set(), started: performance.now() };
    timings.prefetchTotal = ids.length;
    timings.prefetchMs = null;
    for (const id of ids) if (cache.isLoaded(id)) this.state.loaded.add(id);
    timings.prefetchLoaded = this.state.loaded.size;
    this._checkDone();
  }

  count(imageId) {
    const state = this.state;
    if (!state || !imageId || !state.ids.has(imageId) || state.loaded.has(imageId)) return;
    state.loaded.add(imageId);
    this.viewer.timings.prefetchLoaded = state.loaded.size;
    this.viewer.panels[0].updateProgress(state.loaded.size, state.ids.size);
    this._checkDone();
  }

  _checkDone() {
    const { state, viewer } = this;
    if (state && state.loaded.size >= state.ids.size && viewer.timings.prefetchMs === null) {
      viewer.timings.prefetchMs = Math.round(performance.now() - viewer.mountedAt);
      viewer.panels[0].updateProgress(state.ids.size, state.ids.size);
    }
  }
}
