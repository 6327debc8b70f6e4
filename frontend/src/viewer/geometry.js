/**
 * A stack viewport's view in image pixels, the unit the review protocol and key images use
 * (docs/review-protocol.md): pan as the image centre's offset from the viewport centre,
 * rotation in quarter turns. Kept apart so that the panel, the tools and the protocol share
 * one definition.
 */
import { utilities as csUtils } from '@cornerstonejs/core';

export const round = (value, digits = 2) => {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};
export const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

/** The viewport's rotation as 0, 90, 180 or 270. */
export function normalizedRotation(viewport) {
  const rotation = Number(viewport.getViewPresentation({ rotation: true }).rotation) || 0;
  return ((Math.round(rotation / 90) * 90) % 360 + 360) % 360;
}

/** The view's pan in image pixels: how far the image centre is from the viewport centre. */
export function panInImagePixels(viewport, imageId) {
  const image = viewport.getCornerstoneImage?.();
  try {
    const focal = csUtils.worldToImageCoords(imageId, viewport.getCamera().focalPoint);
    return [image.columns / 2 - focal[0], image.rows / 2 - focal[1]];
  } catch {
    return [0, 0];
  }
}

export function setPanInImagePixels(viewport, pan) {
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
