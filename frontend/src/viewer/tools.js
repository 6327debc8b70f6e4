/**
 * The viewer's tools: the Cornerstone tool classes and their mouse bindings, the CT window
 * presets, and what each toolbar button does to the active viewport.
 */
import * as csTools from '@cornerstonejs/tools';

import { normalizedRotation } from './geometry.js';

const { ToolGroupManager, Enums: toolEnums, annotation: csAnnotation } = csTools;
const { MouseBindings } = toolEnums;

export const ANNOTATION_TOOLS = ['Length', 'Angle', 'RectangleROI', 'EllipticalROI', 'ArrowAnnotate'];
export const NAVIGATION_TOOLS = ['WindowLevel', 'Pan', 'Zoom'];
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

/** One tool group per viewer: the primary button's tool, pan, zoom and scroll on the others. */
export function createToolGroup(viewer) {
  const group = ToolGroupManager.createToolGroup(`mirc-tools-${viewer.number}`);
  for (const name of Object.keys(TOOL_CLASSES)) {
    const options = name === 'ArrowAnnotate'
      ? {
        getTextCallback: (done) => viewer.textDialog.ask('', done),
        changeTextCallback: (data, eventData, done) => viewer.textDialog.ask(data?.data?.label || '', done),
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

export function destroyToolGroup(group) {
  ToolGroupManager.destroyToolGroup(group.id);
}

/** Puts a primary tool on the left mouse button; false for a name that is not one. */
export function setTool(viewer, name) {
  if (!PRIMARY_TOOLS.includes(name)) return false;
  const group = viewer.toolGroup;
  const previous = viewer.activeTool;
  if (previous !== name) {
    group.setToolPassive(TOOL_CLASSES[previous].toolName);
    group.setToolActive(TOOL_CLASSES[name].toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    viewer.activeTool = name;
  }
  for (const button of viewer.toolbar.querySelectorAll('[data-tool]')) {
    button.setAttribute('aria-pressed', button.dataset.tool === name ? 'true' : 'false');
  }
  return true;
}

/** A preset's window on the active viewport; 'default' goes back to the image's own. */
export function applyPreset(viewer, key) {
  const panel = viewer.panel;
  if (!panel.ready) return;
  viewer.userChangedView(panel.index);
  if (key === 'default') {
    panel.resetVoi();
    return;
  }
  const preset = PRESETS.find((p) => p.key === key);
  if (preset) panel.setVoi(preset.ww, preset.wc);
}

export function resetView(viewer) {
  const panel = viewer.panel;
  if (!panel.ready) return;
  viewer.userChangedView(panel.index);
  panel.reset();
}

export function invert(viewer) {
  const panel = viewer.panel;
  if (!panel.ready) return;
  const { invert: inverted } = panel.viewport.getProperties();
  panel.viewport.setProperties({ invert: !inverted });
  panel.viewport.render();
}

export function rotate(viewer) {
  const panel = viewer.panel;
  if (!panel.ready) return;
  viewer.userChangedView(panel.index);
  const rotation = (normalizedRotation(panel.viewport) + 90) % 360;
  panel.viewport.setViewPresentation({ rotation });
  panel.viewport.render();
}

export function flipH(viewer) {
  const panel = viewer.panel;
  if (!panel.ready) return;
  viewer.userChangedView(panel.index);
  const { flipHorizontal } = panel.viewport.getCamera();
  panel.viewport.setViewPresentation({ flipHorizontal: !flipHorizontal });
  panel.viewport.render();
}

/** Removes the measurements this user may change (a follower's room annotations are locked). */
export function clearAnnotations(viewer) {
  const uids = viewer.localAnnotations()
    .map((a) => a.annotationUID)
    .filter((uid) => !csAnnotation.locking.isAnnotationLocked(uid));
  for (const uid of uids) csAnnotation.state.removeAnnotation(uid);
  viewer.renderAll();
}

export function deleteSelectedAnnotation(viewer) {
  const selected = csAnnotation.selection.getAnnotationsSelected() || [];
  for (const annotation of selected) {
    if (!csAnnotation.locking.isAnnotationLocked(annotation.annotationUID)) {
      csAnnotation.state.removeAnnotation(annotation.annotationUID);
    }
  }
  viewer.renderAll();
}

/** The measurements drawn on this viewer's images (a page may hold several viewers). */
export function localAnnotations(viewer) {
  return (csAnnotation.state.getAllAnnotations() || []).filter((a) =>
    ANNOTATION_TOOLS.includes(a.metadata?.toolName) && viewer.ownsImageId(a.metadata?.referencedImageId),
  );
}
