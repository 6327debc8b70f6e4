/**
 * Layout: one viewport, or two side by side to compare with a prior exam; which one is active
 * (the series browser, the toolbar and the keys act on it); the viewports' size, kept through
 * a resize; and the viewer's height on the page.
 */
import { el } from '../labels.js';
import { stopCine, syncCineButton } from './cine.js';
import { panInImagePixels, setPanInImagePixels } from './geometry.js';
import { renderSeriesBrowser } from './series.js';

// The smallest viewer that still shows an image worth reading, with its toolbar and slider.
const VIEWER_MIN_HEIGHT = 360;
const VIEWER_MARGIN = 12;

/** Sizes the viewer to the room left below it on the screen, so that its toolbar, image and
 * slider show without scrolling (a 1366x768 laptop, a tablet). A viewer placed low on a long
 * page (the live RCP page) gets the whole screen's height, to be read once scrolled to. The
 * height goes through a CSS variable (CSSOM, allowed by the Content-Security-Policy). */
export function fitToScreen(element) {
  const fit = () => {
    const top = element.getBoundingClientRect().top + window.scrollY;
    const screen = window.innerHeight - VIEWER_MARGIN;
    const below = screen - top;
    const height = below >= VIEWER_MIN_HEIGHT ? below : screen;
    element.style.setProperty('--mirc-viewer-height', `${Math.max(VIEWER_MIN_HEIGHT, height)}px`);
  };
  fit();
  window.addEventListener('resize', fit);
}

/** The toolbar's compare button (viewer.layoutButton). */
export function layoutButton(viewer) {
  const t = viewer.t;
  viewer.layoutButton = el('button', {
    type: 'button', class: 'mv-btn', dataset: { testid: 'layout-compare' }, 'aria-pressed': 'false',
    title: `${t('layoutCompare')} (C)`, onclick: () => toggleLayout(viewer),
    disabled: viewer.studies.length < 1,
  }, t('layoutCompare'));
  return viewer.layoutButton;
}

export function setActivePanel(viewer, index) {
  if (index === viewer.activePanel || index >= viewer.layout) return;
  viewer.activePanel = index;
  for (const panel of viewer.panels) panel.node.classList.toggle('mv-active', panel.index === index);
  renderSeriesBrowser(viewer);
  syncCineButton(viewer);
}

export function toggleLayout(viewer) {
  setLayout(viewer, viewer.layout === 1 ? 2 : 1);
}

/** 2 opens the second viewport on the first other study (the prior), 1 closes it. */
export function setLayout(viewer, layout) {
  viewer.layout = layout === 2 ? 2 : 1;
  viewer.grid.dataset.layout = String(viewer.layout);
  viewer.layoutButton.setAttribute('aria-pressed', viewer.layout === 2 ? 'true' : 'false');
  viewer.panels[1].node.hidden = viewer.layout !== 2;
  if (viewer.layout === 2) {
    viewer.enablePanel(1);
    resizeViewports(viewer);
    const second = viewer.panels[1];
    if (!second.studyUid) {
      const prior = viewer.studies.find((s) => s.uid !== viewer.panels[0].studyUid) || viewer.studies[0];
      if (prior) viewer.openStudy(1, prior.uid);
    }
    setActivePanel(viewer, 1);
  } else {
    stopCine(viewer.panels[1]);
    setActivePanel(viewer, 0);
    resizeViewports(viewer);
  }
  for (const panel of viewer.panels) panel.node.classList.toggle('mv-active', viewer.layout === 2 && panel.index === viewer.activePanel);
}

/** Resizes the viewports once per frame, each keeping its zoom and pan. */
export function resizeViewports(viewer) {
  if (viewer._resizePending) return;
  viewer._resizePending = requestAnimationFrame(() => {
    viewer._resizePending = null;
    try {
      // Zoom is relative to the image fitted in its viewport and pan is in image pixels
      // (as in the review protocol): keep both across a change of viewport size.
      const kept = viewer.panels.filter((p) => p.ready).map((p) => [p, p.viewport.getZoom(), panInImagePixels(p.viewport, p.viewport.getCurrentImageId())]);
      viewer.engine.resize(true, true);
      for (const [panel, zoom, pan] of kept) {
        panel.viewport.setZoom(zoom);
        setPanInImagePixels(panel.viewport, pan);
        panel.viewport.render();
      }
      for (const panel of viewer.panels) panel.updateOverlay();
    } catch (error) {
      console.warn(error);
    }
  });
}
