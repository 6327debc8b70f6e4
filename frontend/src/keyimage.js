/**
 * The viewer's "Key image" button, shown when the page's config has
 * `keyImages: {url, csrf}` (an RCP case: rcp/views/key_images.py). It posts the image of
 * viewport 1 as shown — instance, frame, window, zoom, pan, rotation, flips and the
 * measurements drawn on it, in the review protocol's form (docs/review-protocol.md) — and
 * says in the toolbar whether it worked. On success it dispatches `mirc-key-image-added` on
 * document.body: the page's list of key images (templates/rcp/_key_images.html) reloads.
 */
import { parseImageId } from './dicomweb.js';
import { el } from './labels.js';
import './keyimage.css';

const MAX_ANNOTATIONS = 50; // rcp/key_images.py
const MESSAGE_SECONDS = 8;

export class KeyImageButton {
  constructor(viewer, { url, csrf }) {
    this.viewer = viewer;
    this.url = url;
    this.csrf = csrf || '';
    this.busy = false;
    this.last = null; // the server's answer to the last request (tests read it)
    const t = viewer.t;
    this.button = el('button', {
      type: 'button', class: 'mv-btn', dataset: { testid: 'key-image' }, title: t('keyImageTitle'),
      onclick: () => this.save(),
    }, t('keyImage'));
    this.status = el('span', {
      class: 'mv-keyimage-status', role: 'status', 'aria-live': 'polite', dataset: { testid: 'key-image-status' },
    });
    this.node = el('div', { class: 'mv-group', role: 'group', 'aria-label': t('keyImage') }, this.button, this.status);
  }

  /** The image of viewport 1 and how it is shown, or null while none is. */
  payload() {
    const viewer = this.viewer;
    const panel = viewer.panels[0];
    const view = viewer.getView();
    const ids = view && parseImageId(panel.viewport.getCurrentImageId());
    if (!ids) return null;
    const { pointer, ...shown } = view;
    const annotations = viewer.getAnnotations().filter((a) =>
      a.study === ids.study && a.series === ids.series && a.sop === ids.sop && (a.frame || 1) === ids.frame);
    const stack = panel.stack;
    const caption = viewer.t('keyImageCaption', {
      number: stack.seriesNumber,
      index: view.index + 1,
      total: stack.imageIds.length,
      ww: Math.round(view.voi.ww),
      wc: Math.round(view.voi.wc),
    });
    return {
      study: ids.study,
      series: ids.series,
      sop: ids.sop,
      frame: ids.frame,
      view: shown,
      annotations: annotations.slice(0, MAX_ANNOTATIONS),
      caption: caption.slice(0, 200),
    };
  }

  async save() {
    if (this.busy) return;
    const t = this.viewer.t;
    const body = this.payload();
    if (!body) {
      this._show('error', t('keyImageNoImage'));
      return;
    }
    this.busy = true;
    this.button.disabled = true;
    this._show('busy', t('keyImageSaving'));
    try {
      const response = await fetch(this.url, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRFToken': this.csrf },
        body: JSON.stringify(body),
      });
      const answer = await response.json().catch(() => null);
      this.last = { status: response.status, ...(answer || {}) };
      if (response.ok) {
        this._show('ok', t('keyImageSaved'));
        document.body.dispatchEvent(new CustomEvent('mirc-key-image-added', { detail: answer }));
      } else {
        this._show('error', t('keyImageFailed', { error: answer?.error || t('errorStatus', { status: response.status }) }));
      }
    } catch {
      this.last = { status: 0 };
      this._show('error', t('keyImageFailed', { error: t('errorNetwork') }));
    } finally {
      this.busy = false;
      this.button.disabled = false;
    }
  }

  _show(state, text) {
    this.status.dataset.state = state;
    this.status.textContent = text;
    clearTimeout(this._timer);
    if (state !== 'busy') {
      this._timer = setTimeout(() => {
        this.status.textContent = '';
        delete this.status.dataset.state;
      }, MESSAGE_SECONDS * 1000);
    }
  }
}
