/**
 * Entry point (static/build/viewer.js): initialises Cornerstone3D once, then mounts a viewer
 * in every [data-mirc-viewer] element of the page, reading its JSON config from the
 * <script type="application/json"> named by data-config-id. Exposes window.mircViewers for
 * the browser tests.
 */
import { init as coreInit } from '@cornerstonejs/core';
import { init as imageLoaderInit } from '@cornerstonejs/dicom-image-loader';
import { addTool, init as toolsInit } from '@cornerstonejs/tools';

import { authHeaders, takeTokenFromFragment } from './dicomweb.js';
import { ReviewClient } from './review.js';
import { fitToScreen } from './viewer/layout.js';
import { TOOL_CLASSES } from './viewer/tools.js';
import { Viewer } from './viewer/viewer.js';
import './viewer.css';

let initialised = false;

/**
 * Cornerstone's SVG text boxes set a `style` attribute (user-select, drop shadow), which the
 * portal's Content-Security-Policy (style-src 'self', no inline styles) refuses and reports.
 * The same declarations set through the CSSOM are allowed: route that one attribute there,
 * for SVG text elements only.
 */
function allowSvgTextStylesUnderCsp() {
  const proto = window.SVGTextElement?.prototype;
  if (!proto || proto.mircCspShim) return;
  const setAttribute = Element.prototype.setAttribute;
  Object.defineProperty(proto, 'mircCspShim', { value: true });
  proto.setAttribute = function setAttributeCspSafe(name, value) {
    if (String(name).toLowerCase() === 'style') {
      this.style.cssText = String(value);
      return undefined;
    }
    return setAttribute.call(this, name, value);
  };
}

function initialiseCornerstone() {
  if (initialised) return;
  initialised = true;
  allowSvgTextStylesUnderCsp();
  coreInit();
  imageLoaderInit({
    maxWebWorkers: Math.max(1, Math.min(4, Math.floor((navigator.hardwareConcurrency || 2) / 2))),
    // Frames carry the viewer token as a header, like every other DICOMweb request.
    beforeSend: () => authHeaders(),
  });
  toolsInit();
  for (const ToolClass of Object.values(TOOL_CLASSES)) addTool(ToolClass);
}

function readConfig(element) {
  const id = element.dataset.configId;
  const script = id ? document.getElementById(id) : element.querySelector('script[type="application/json"]');
  if (!script) return null;
  try {
    return JSON.parse(script.textContent);
  } catch (error) {
    console.error('mirc viewer: invalid config', error);
    return null;
  }
}

/** The test hooks of one viewer (tests/test_viewer_browser.py). */
function hooks(viewer) {
  return {
    element: viewer.root,
    ready: viewer.ready,
    timings: viewer.timings,
    viewer,
    getView: () => viewer.review?.currentView() ?? viewer.getView(),
    getAnnotations: () => viewer.getAnnotations(),
    isFollowing: () => Boolean(viewer.review?.isFollowing()),
    isPresenter: () => Boolean(viewer.review?.isPresenter()),
    setTool: (name) => viewer.setTool(name),
  };
}

function mountAll() {
  // Before anything else reads the address: the token leaves the URL at once.
  takeTokenFromFragment();
  window.mircViewers = window.mircViewers || [];
  const elements = document.querySelectorAll('[data-mirc-viewer]:not([data-mirc-mounted])');
  if (!elements.length) return;
  initialiseCornerstone();
  for (const element of elements) {
    element.dataset.mircMounted = 'true';
    fitToScreen(element);
    const config = readConfig(element) || {};
    const viewer = new Viewer(element, config);
    window.mircViewers.push(hooks(viewer));
    if (config.room && config.room.ws) {
      viewer.review = new ReviewClient(viewer, config.room, config.user);
    }
    viewer.mount().catch((error) => console.error(error));
    viewer.review?.start();
  }
}

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', mountAll, { once: true });
} else {
  mountAll();
}
