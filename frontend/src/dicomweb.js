/**
 * The portal's DICOMweb service, as the viewer uses it (PS3.18): QIDO-RS series of a study
 * (§10.6), WADO-RS series metadata (§10.4, DICOM JSON of PS3.18 Annex F) and frames, fetched by
 * Cornerstone's wadors loader with the stored transfer syntax (`transfer-syntax=*`).
 * Same origin: the session cookie is the credential, or a viewer token held in memory and sent
 * as `Authorization: Bearer` (never in a URL, where access logs and the browser history would
 * keep it).
 */
import { wadors } from '@cornerstonejs/dicom-image-loader';

/** The viewer token of a page launched with one (see takeTokenFromFragment), else null. */
let bearerToken = null;

/**
 * A viewer launched from a link carrying `#token=…` takes the token from the URL fragment,
 * which the browser never sends to a server (so no access log sees it), then removes it from
 * the address bar and the history: from then on it lives in this module's memory only.
 */
export function takeTokenFromFragment(location = window.location, history = window.history) {
  const params = new URLSearchParams(String(location.hash || '').replace(/^#/, ''));
  const token = params.get('token');
  if (!token) return false;
  params.delete('token');
  const rest = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
  bearerToken = token;
  return true;
}

/** The headers that authenticate a DICOMweb request: the bearer token when there is one. */
export function authHeaders() {
  return bearerToken ? { Authorization: `Bearer ${bearerToken}` } : {};
}

/** Series that hold no pixels: hidden from the series browser. */
const NON_IMAGE_MODALITIES = new Set([
  'SR', 'KO', 'PR', 'DOC', 'RTSTRUCT', 'RTPLAN', 'RTRECORD', 'SEG', 'REG', 'FID', 'ECG',
  'HD', 'AU', 'PLAN', 'RWV',
]);

export class DicomWebError extends Error {
  constructor(status, url) {
    super(`DICOMweb ${status} for ${url}`);
    this.status = status;
    this.url = url;
  }
}

export function tagValue(dataset, tag, index = 0) {
  const element = dataset?.[tag];
  return element?.Value?.[index];
}

function personName(dataset, tag) {
  const value = tagValue(dataset, tag);
  return typeof value === 'object' ? value?.Alphabetic || '' : value || '';
}

async function getJson(url, signal) {
  let response;
  try {
    response = await fetch(url, {
      credentials: 'same-origin',
      headers: { Accept: 'application/dicom+json, application/json', ...authHeaders() },
      signal,
    });
  } catch (error) {
    if (error?.name === 'AbortError') throw error;
    throw new DicomWebError(0, url);
  }
  if (response.status === 204) return [];
  if (!response.ok) throw new DicomWebError(response.status, url);
  return response.json();
}

export class DicomWeb {
  constructor(root) {
    // wadors: imageIds need an absolute URL; the root is same-origin.
    this.root = new URL(String(root || '/dicomweb').replace(/\/+$/, ''), window.location.href).href;
    this._series = new Map();
    this._stacks = new Map();
  }

  studyUrl(study) {
    return `${this.root}/studies/${study}`;
  }

  seriesUrl(study, series) {
    return `${this.studyUrl(study)}/series/${series}`;
  }

  thumbnailUrl(study, series) {
    return `${this.seriesUrl(study, series)}/thumbnail`;
  }

  /**
   * What an <img> shows for a series' thumbnail. An image element cannot send a header: with
   * a bearer token the thumbnail is fetched with it and shown from a blob: URL.
   */
  async thumbnailSrc(study, series) {
    const url = this.thumbnailUrl(study, series);
    if (!bearerToken) return url;
    const response = await fetch(url, { credentials: 'same-origin', headers: authHeaders() });
    if (!response.ok) throw new DicomWebError(response.status, url);
    return URL.createObjectURL(await response.blob());
  }

  imageId(study, series, sop, frame = 1) {
    return `wadors:${this.seriesUrl(study, series)}/instances/${sop}/frames/${frame}`;
  }

  /** The image series of a study, in series-number order. */
  listSeries(study) {
    if (!this._series.has(study)) {
      const promise = getJson(`${this.studyUrl(study)}/series`).then((datasets) =>
        datasets
          .map((ds) => ({
            uid: tagValue(ds, '0020000E'),
            modality: tagValue(ds, '00080060') || '',
            number: Number(tagValue(ds, '00200011') ?? 0),
            description: tagValue(ds, '0008103E') || '',
            count: Number(tagValue(ds, '00201209') ?? 0),
          }))
          .filter((s) => s.uid && !NON_IMAGE_MODALITIES.has(s.modality))
          .sort((a, b) => a.number - b.number || a.uid.localeCompare(b.uid)),
      );
      promise.catch(() => this._series.delete(study));
      this._series.set(study, promise);
    }
    return this._series.get(study);
  }

  /**
   * The stack of a series: one imageId per frame, ordered by instance number (then position
   * along the slice normal), with the instances' metadata registered for the wadors loader.
   */
  loadStack(study, series) {
    const key = `${study}/${series}`;
    if (!this._stacks.has(key)) {
      const promise = getJson(`${this.seriesUrl(study, series)}/metadata`).then((datasets) =>
        this._buildStack(study, series, datasets),
      );
      promise.catch(() => this._stacks.delete(key));
      this._stacks.set(key, promise);
    }
    return this._stacks.get(key);
  }

  _buildStack(study, series, datasets) {
    const images = datasets.filter((ds) => tagValue(ds, '00280010') && tagValue(ds, '00080018'));
    const position = (ds) => {
      const ipp = ds['00200032']?.Value;
      const iop = ds['00200037']?.Value;
      if (!ipp || !iop || iop.length !== 6) return 0;
      const n = [
        iop[1] * iop[5] - iop[2] * iop[4],
        iop[2] * iop[3] - iop[0] * iop[5],
        iop[0] * iop[4] - iop[1] * iop[3],
      ];
      return ipp[0] * n[0] + ipp[1] * n[1] + ipp[2] * n[2];
    };
    images.sort(
      (a, b) =>
        Number(tagValue(a, '00200013') ?? 0) - Number(tagValue(b, '00200013') ?? 0) ||
        position(b) - position(a),
    );
    const imageIds = [];
    let frameRate = 0;
    for (const ds of images) {
      const sop = tagValue(ds, '00080018');
      const frames = Math.max(1, Number(tagValue(ds, '00280008') ?? 1) || 1);
      // A multi-frame instance is registered once (frame 1); the loader derives the others.
      wadors.metaDataManager.add(this.imageId(study, series, sop, 1), ds);
      for (let frame = 1; frame <= frames; frame += 1) {
        imageIds.push(this.imageId(study, series, sop, frame));
      }
      if (frames > 1 && !frameRate) {
        const cineRate = Number(tagValue(ds, '00180040') ?? 0);
        const frameTime = Number(tagValue(ds, '00181063') ?? 0);
        frameRate = cineRate || (frameTime ? Math.round(1000 / frameTime) : 0);
      }
    }
    const first = images[0];
    return {
      study,
      series,
      imageIds,
      multiframe: images.length === 1 && imageIds.length > 1,
      frameRate: Math.min(60, Math.max(0, frameRate)),
      modality: tagValue(first, '00080060') || '',
      seriesNumber: tagValue(first, '00200011') ?? '',
      seriesDescription: tagValue(first, '0008103E') || '',
      studyDate: tagValue(first, '00080020') || '',
      studyDescription: tagValue(first, '00081030') || '',
      patientName: personName(first, '00100010'),
    };
  }
}

/** The UIDs and frame number an imageId of this viewer points at, or null. */
export function parseImageId(imageId) {
  const match = /\/studies\/([0-9.]+)\/series\/([0-9.]+)\/instances\/([0-9.]+)\/frames\/(\d+)/.exec(
    imageId || '',
  );
  if (!match) return null;
  return { study: match[1], series: match[2], sop: match[3], frame: Number(match[4]) };
}
