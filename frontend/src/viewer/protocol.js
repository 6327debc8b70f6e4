/**
 * The review protocol's forms (docs/review-protocol.md) and Cornerstone's state, both ways:
 * a viewport's view <-> a `view` message's view, a Cornerstone annotation <-> an `annotation`
 * message's annotation. The viewer (getView, applyView, key images) and the review client
 * (review.js) both convert through here, so neither imports the other.
 */
import { metaData, utilities as csUtils } from '@cornerstonejs/core';
import { annotation as csAnnotation } from '@cornerstonejs/tools';

import { parseImageId } from '../dicomweb.js';
import { clamp, normalizedRotation, panInImagePixels, round, setPanInImagePixels } from './geometry.js';
import { ANNOTATION_TOOLS, TOOL_CLASSES } from './tools.js';

const { toWindowLevel, toLowHighRange } = csUtils.windowLevel;
const UID = /^[0-9]+(\.[0-9]+)*$/;
const ANNOTATION_UID = /^[A-Za-z0-9.-]{1,64}$/;

export function isUid(value) {
  return UID.test(value || '');
}

/** The protocol's view of a panel's viewport, or null while it shows no image. */
export function viewOfPanel(panel) {
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
    pan: panInImagePixels(viewport, imageId).map((v) => round(clamp(v, -1e7, 1e7))),
    rotation: normalizedRotation(viewport),
    flipH: Boolean(camera.flipHorizontal),
    flipV: Boolean(camera.flipVertical),
    pointer: null,
  };
}

/** Shows a protocol view in a panel that already holds the view's series. */
export async function showViewInPanel(panel, view) {
  const viewport = panel.viewport;
  const total = panel.stack.imageIds.length;
  const index = clamp(view.index, 0, total - 1);
  if (viewport.getCurrentImageIdIndex() !== index) {
    try {
      await viewport.setImageIdIndex(index);
    } catch (error) {
      panel.showError(panel.viewer.describeError(error));
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
  if (view.pan) setPanInImagePixels(viewport, view.pan);
  viewport.render();
  panel.showPointer(view.pointer);
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

/** Whether an annotation received from the room is one this viewer can draw. */
export function isDrawableAnnotation(item) {
  return ANNOTATION_TOOLS.includes(item?.tool) && Array.isArray(item.points);
}

/** Whether an annotation's uid may be sent (the relay's schema). */
export function isSendableUid(uid) {
  return ANNOTATION_UID.test(uid);
}

/** What makes two protocol annotations the same drawing (sent once, not again). */
export function annotationKey(item) {
  return JSON.stringify([item.tool, item.study, item.series, item.sop, item.frame || 1, item.points, item.text || '']);
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
