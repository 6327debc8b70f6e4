/**
 * The client of the live shared review (docs/review-protocol.md).
 *
 * Every participant loads the images through DICOMweb; only the presenter's viewing state of
 * viewport 1 travels over the room's WebSocket: `view` (coalesced, at most 20 a second, the
 * latest state only) and `annotation` (upsert / remove / clear, sent when a measurement is
 * completed, changed or removed). Followers apply them unless they detached by interacting.
 */
import { eventTarget } from '@cornerstonejs/core';
import { Enums as toolEnums, annotation as csAnnotation } from '@cornerstonejs/tools';

import { el } from './labels.js';
import {
  annotationKey,
  isDrawableAnnotation,
  isSendableUid,
  isUid,
  toProtocolAnnotation,
  upsertProtocolAnnotation,
} from './viewer/protocol.js';

const VIEW_INTERVAL_MS = 50; // 20 a second at most
const ANNOTATION_MODIFIED_DELAY_MS = 120;
// Closed for good: reconnecting would be refused again, or (4429, too many messages) would
// flood again. The status shows why (labels reviewClosed_<code>).
const FINAL_CLOSE_CODES = new Set([4401, 4403, 4404, 4429]);

export class ReviewClient {
  constructor(viewer, room, user) {
    this.viewer = viewer;
    this.t = viewer.t;
    this.room = room;
    this.me = user || null;
    this.seq = 0;
    this.lastSeq = -1;
    this.presenter = null;
    this.participants = [];
    this.following = true;
    this.latestView = null;
    this.pointerMode = false;
    this.pointer = null;
    this.roomAnnotations = new Map();
    this.sentAnnotations = new Map();
    this.attempt = 0;
    this.closed = false;
    this.welcomed = false;
    this._suppressAnnotationEvents = 0;
    this._viewTimer = null;
    this._viewDirty = false;
    this._lastViewSentAt = 0;
    this._lastViewJson = '';
    this._modifiedTimers = new Map();
  }

  // --- lifecycle -------------------------------------------------------------------------------

  start() {
    this._buildUi();
    this.viewer.on('view', () => this._localViewChanged());
    this.viewer.on('userView', () => this._userInteracted());
    this.viewer.on('series', () => this._materializePending());
    this._annotationListeners = {
      [toolEnums.Events.ANNOTATION_COMPLETED]: (e) => this._annotationChanged(e.detail?.annotation, true),
      [toolEnums.Events.ANNOTATION_MODIFIED]: (e) => this._annotationChanged(e.detail?.annotation, false),
      [toolEnums.Events.ANNOTATION_REMOVED]: (e) => this._annotationRemoved(e.detail?.annotation),
    };
    for (const [name, handler] of Object.entries(this._annotationListeners)) {
      eventTarget.addEventListener(name, handler);
    }
    this._wirePointer();
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this._reconnectTimer);
    for (const [name, handler] of Object.entries(this._annotationListeners || {})) {
      eventTarget.removeEventListener(name, handler);
    }
    this.ws?.close(1000);
  }

  connect() {
    if (this.closed) return;
    const url = new URL(this.room.ws, window.location.href);
    url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    this._setStatus('connecting');
    let ws;
    try {
      ws = new WebSocket(url.href);
    } catch (error) {
      console.error(error);
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    ws.addEventListener('message', (event) => {
      if (ws !== this.ws) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && message.v === 1) this._handle(message);
    });
    ws.addEventListener('close', (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.welcomed = false;
      if (FINAL_CLOSE_CODES.has(event.code)) {
        this.closed = true;
        this._setStatus('closed', this.t(`reviewClosed_${event.code}`));
        return;
      }
      this._scheduleReconnect();
    });
  }

  _scheduleReconnect() {
    if (this.closed) return;
    const base = Math.min(10000, 500 * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this._setStatus('reconnecting');
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  _send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.welcomed) return false;
    this.seq += 1;
    this.ws.send(JSON.stringify({ v: 1, seq: this.seq, ...message }));
    return true;
  }

  // --- incoming --------------------------------------------------------------------------------

  _handle(message) {
    switch (message.type) {
      case 'welcome':
        this._welcome(message);
        break;
      case 'presence':
        this._presence(message.presenter, message.participants);
        break;
      case 'view':
        this._view(message);
        break;
      case 'annotation':
        this._annotation(message);
        break;
      case 'control_requested':
        this._controlRequested(message.by);
        break;
      case 'error':
        this._flash(this.t(`reviewError_${message.code}`));
        break;
      default:
        break;
    }
  }

  _welcome(message) {
    this.welcomed = true;
    this.attempt = 0;
    this.me = message.you || this.me;
    this.lastSeq = typeof message.seq === 'number' ? message.seq : -1;
    this._setStatus('connected');
    if (message.room?.title) this.titleNode.textContent = message.room.title;
    // The snapshot's annotations replace those of the room we knew (a reconnection).
    const snapshot = new Map();
    for (const item of message.annotations || []) if (item?.uid) snapshot.set(item.uid, item);
    for (const uid of [...this.roomAnnotations.keys()]) {
      if (!snapshot.has(uid)) this._removeLocal(uid);
    }
    for (const item of snapshot.values()) this._upsertLocal(item);
    this.latestView = message.view || null;
    this._presence(message.presenter, message.participants, { welcome: true });
    if (!this.isPresenter() && this.latestView && this.following) {
      this.viewer.applyView(this.latestView);
    }
  }

  _presence(presenter, participants, { welcome = false } = {}) {
    const before = this.presenter?.id ?? null;
    this.presenter = presenter || null;
    this.participants = Array.isArray(participants) ? participants : [];
    const now = this.presenter?.id ?? null;
    if (now !== before || welcome) {
      if (this.isPresenter()) {
        this._becamePresenter();
      } else {
        this.pointerMode = false;
        this.pointer = null;
        if (now !== null && now !== before) this._setFollowing(true, { apply: false });
        this._lockRoomAnnotations(true);
      }
    }
    this._renderPresence();
  }

  _becamePresenter() {
    this._setFollowing(true, { apply: false });
    this._lockRoomAnnotations(false);
    this.viewer.panels[0].showPointer(null);
    this.requestNotice.hidden = true;
    this._sendViewNow();
  }

  _view(message) {
    if (this.me && message.from === this.me.id) return;
    if (typeof message.seq === 'number') {
      if (message.seq < this.lastSeq) return;
      this.lastSeq = message.seq;
    }
    if (!message.view) return;
    this.latestView = message.view;
    if (this.isPresenter() || !this.following) return;
    this.viewer.applyView(message.view);
  }

  _annotation(message) {
    if (this.me && message.from === this.me.id) return;
    if (typeof message.seq === 'number') {
      if (message.seq < this.lastSeq) return;
      this.lastSeq = message.seq;
    }
    if (message.op === 'upsert' && message.annotation?.uid) {
      this._upsertLocal(message.annotation);
    } else if (message.op === 'remove' && message.uid) {
      this._removeLocal(message.uid);
    } else if (message.op === 'clear') {
      for (const uid of [...this.roomAnnotations.keys()]) this._removeLocal(uid);
      this._suppressAnnotationEvents += 1;
      try {
        for (const annotation of this.viewer.localAnnotations()) {
          csAnnotation.state.removeAnnotation(annotation.annotationUID);
        }
      } finally {
        this._suppressAnnotationEvents -= 1;
      }
    }
    this.viewer.renderAll();
  }

  _upsertLocal(item) {
    if (!isDrawableAnnotation(item)) return;
    this.roomAnnotations.set(item.uid, { ...item, shown: false });
    this.sentAnnotations.set(item.uid, annotationKey(item));
    this._materialize(item.uid);
  }

  _materialize(uid) {
    const entry = this.roomAnnotations.get(uid);
    if (!entry) return;
    this._suppressAnnotationEvents += 1;
    try {
      entry.shown = upsertProtocolAnnotation(this.viewer, entry);
      if (entry.shown) csAnnotation.locking.setAnnotationLocked(uid, !this.isPresenter());
    } catch (error) {
      console.warn(error);
    } finally {
      this._suppressAnnotationEvents -= 1;
    }
  }

  _materializePending() {
    let changed = false;
    for (const [uid, entry] of this.roomAnnotations) {
      if (!entry.shown) {
        this._materialize(uid);
        changed = changed || entry.shown;
      }
    }
    if (changed) this.viewer.renderAll();
  }

  _removeLocal(uid) {
    this.roomAnnotations.delete(uid);
    this.sentAnnotations.delete(uid);
    this._suppressAnnotationEvents += 1;
    try {
      csAnnotation.state.removeAnnotation(uid);
    } finally {
      this._suppressAnnotationEvents -= 1;
    }
  }

  _lockRoomAnnotations(locked) {
    for (const uid of this.roomAnnotations.keys()) {
      if (csAnnotation.state.getAnnotation(uid)) csAnnotation.locking.setAnnotationLocked(uid, locked);
    }
    this.viewer.renderAll();
  }

  _controlRequested(by) {
    if (!by || (this.me && by.id === this.me.id)) return;
    this.requestText.textContent = this.t('controlRequested', { name: by.name });
    this.requestGrant.hidden = !this.canGrant();
    this.requestGrant.onclick = () => {
      this.grant(by.id);
      this.requestNotice.hidden = true;
    };
    this.requestNotice.hidden = false;
  }

  // --- outgoing --------------------------------------------------------------------------------

  takeControl() {
    this._send({ type: 'take_control' });
  }

  requestControl() {
    if (this._send({ type: 'request_control' })) this._flash(this.t('controlRequestSent'));
  }

  grant(userId) {
    this._send({ type: 'grant_control', to: userId });
  }

  release() {
    this.pointer = null;
    this._sendViewNow();
    this._send({ type: 'release_control' });
  }

  _localViewChanged() {
    if (!this.isPresenter()) return;
    this._viewDirty = true;
    if (this._viewTimer) return;
    const wait = Math.max(0, this._lastViewSentAt + VIEW_INTERVAL_MS - performance.now());
    this._viewTimer = setTimeout(() => this._flushView(), wait);
  }

  _flushView() {
    this._viewTimer = null;
    if (!this._viewDirty || !this.isPresenter()) return;
    this._viewDirty = false;
    const view = this.currentView();
    if (!view) return;
    const json = JSON.stringify(view);
    if (json === this._lastViewJson) return;
    if (this._send({ type: 'view', view })) {
      this._lastViewJson = json;
      this._lastViewSentAt = performance.now();
    }
  }

  _sendViewNow() {
    this._lastViewJson = '';
    this._viewDirty = true;
    clearTimeout(this._viewTimer);
    this._viewTimer = null;
    this._flushView();
  }

  /** The protocol's view of viewport 1, with the laser pointer. */
  currentView() {
    const view = this.viewer.getView();
    if (!view || !isUid(view.study) || !isUid(view.series)) return null;
    view.index = Math.min(9999, Math.max(0, view.index));
    view.pointer = this.pointerMode && this.pointer ? this.pointer : null;
    return view;
  }

  _annotationChanged(annotation, completed) {
    if (this._suppressAnnotationEvents || !this.isPresenter() || !annotation) return;
    const uid = annotation.annotationUID;
    if (!completed && !this.sentAnnotations.has(uid)) return; // still being drawn
    if (!this.viewer.ownsImageId(annotation.metadata?.referencedImageId)) return;
    if (completed) {
      this._sendAnnotation(annotation);
      return;
    }
    clearTimeout(this._modifiedTimers.get(uid));
    this._modifiedTimers.set(uid, setTimeout(() => {
      this._modifiedTimers.delete(uid);
      const current = csAnnotation.state.getAnnotation(uid);
      if (current) this._sendAnnotation(current);
    }, ANNOTATION_MODIFIED_DELAY_MS));
  }

  _sendAnnotation(annotation) {
    const proto = toProtocolAnnotation(annotation);
    if (!proto || !isSendableUid(proto.uid)) return;
    const key = annotationKey(proto);
    if (this.sentAnnotations.get(proto.uid) === key) return;
    if (this._send({ type: 'annotation', op: 'upsert', annotation: proto })) {
      this.sentAnnotations.set(proto.uid, key);
      this.roomAnnotations.set(proto.uid, { ...proto, shown: true });
    }
  }

  _annotationRemoved(annotation) {
    if (this._suppressAnnotationEvents || !annotation) return;
    const uid = annotation.annotationUID;
    clearTimeout(this._modifiedTimers.get(uid));
    if (!this.isPresenter() || !this.sentAnnotations.has(uid)) return;
    if (this._send({ type: 'annotation', op: 'remove', uid })) {
      this.sentAnnotations.delete(uid);
      this.roomAnnotations.delete(uid);
    }
  }

  // --- following -------------------------------------------------------------------------------

  isPresenter() {
    return Boolean(this.me && this.presenter && this.presenter.id === this.me.id);
  }

  isFollowing() {
    return this.following && !this.isPresenter();
  }

  canGrant() {
    return this.isPresenter() || Boolean(this.room.coordinator);
  }

  _userInteracted() {
    if (this.isPresenter() || !this.presenter || !this.following) return;
    this._setFollowing(false);
  }

  followAgain() {
    if (this.isPresenter()) return;
    this._setFollowing(true);
  }

  _setFollowing(following, { apply = true } = {}) {
    this.following = following;
    this.banner.hidden = following || this.isPresenter() || !this.presenter;
    if (!following) this.viewer.panels[0].showPointer(null);
    if (following && apply && this.latestView) this.viewer.applyView(this.latestView);
    this._renderPresence();
  }

  // --- laser pointer ---------------------------------------------------------------------------

  _wirePointer() {
    const panel = this.viewer.panels[0];
    panel.element.addEventListener('pointermove', (event) => {
      if (!this.pointerMode || !this.isPresenter()) return;
      const rect = panel.element.getBoundingClientRect();
      this.pointer = panel.canvasToImage(event.clientX - rect.left, event.clientY - rect.top);
      this._localViewChanged();
    });
    panel.element.addEventListener('pointerleave', () => {
      if (!this.pointerMode || !this.pointer) return;
      this.pointer = null;
      this._localViewChanged();
    });
  }

  togglePointer() {
    this.pointerMode = !this.pointerMode;
    if (!this.pointerMode) this.pointer = null;
    this._localViewChanged();
    this._renderPresence();
  }

  // --- user interface ----------------------------------------------------------------------------

  _buildUi() {
    const t = this.t;
    const bar = this.viewer.reviewBar;
    bar.hidden = false;
    this.statusNode = el('span', { class: 'mv-review-status', dataset: { testid: 'review-status' } });
    this.titleNode = el('strong', { class: 'mv-review-title' }, this.room.title || t('reviewTitle'));
    this.presenceList = el('ul', { class: 'mv-presence', dataset: { testid: 'presence' }, 'aria-label': t('presence') });
    this.takeButton = el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'take-control' }, onclick: () => this.takeControl() }, t('takeControl'));
    this.requestButton = el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'request-control' }, onclick: () => this.requestControl() }, t('requestControl'));
    this.releaseButton = el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'release-control' }, onclick: () => this.release() }, t('releaseControl'));
    this.pointerButton = el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'pointer-toggle' }, 'aria-pressed': 'false', onclick: () => this.togglePointer() }, t('laserPointer'));
    this.message = el('span', { class: 'mv-review-message', role: 'status', dataset: { testid: 'review-message' } });
    this.requestText = el('span', {});
    this.requestGrant = el('button', { type: 'button', class: 'mv-btn', dataset: { testid: 'grant-request' } }, t('grantControl'));
    this.requestNotice = el('div', { class: 'mv-request', hidden: true, role: 'status', dataset: { testid: 'control-request' } },
      this.requestText, this.requestGrant,
      el('button', { type: 'button', class: 'mv-btn', onclick: () => { this.requestNotice.hidden = true; } }, t('dismiss')));
    this.banner = el('div', { class: 'mv-banner', hidden: true, role: 'status', dataset: { testid: 'not-following-banner' } },
      el('span', {}, t('notFollowing')),
      el('button', { type: 'button', class: 'mv-btn mv-btn-strong', dataset: { testid: 'follow-again' }, onclick: () => this.followAgain() }, t('followAgain')));
    bar.replaceChildren(
      el('div', { class: 'mv-review-row' },
        this.statusNode, this.titleNode, this.presenceList,
        el('span', { class: 'mv-review-actions' }, this.takeButton, this.requestButton, this.releaseButton, this.pointerButton),
        this.message),
    );
    // Over the images, so that the viewports do not move when they appear.
    this.viewer.notices.replaceChildren(this.banner, this.requestNotice);
    this._renderPresence();
  }

  _setStatus(state, text) {
    if (!this.statusNode) return;
    this.statusNode.dataset.state = state;
    this.statusNode.textContent = text || this.t(`reviewStatus_${state}`);
    this.viewer.root.dataset.review = state;
  }

  _flash(text) {
    this.message.textContent = text;
    clearTimeout(this._flashTimer);
    this._flashTimer = setTimeout(() => {
      this.message.textContent = '';
    }, 6000);
  }

  _renderPresence() {
    if (!this.presenceList) return;
    const t = this.t;
    const meId = this.me?.id;
    const presenterId = this.presenter?.id ?? null;
    this.presenceList.replaceChildren(...this.participants.map((person) => {
      const isPresenter = person.id === presenterId;
      const grant = this.canGrant() && !isPresenter && this.welcomed && person.id !== meId
        ? el('button', {
          type: 'button', class: 'mv-btn mv-btn-small', dataset: { testid: `grant-${person.id}` },
          title: t('grantControlTo', { name: person.name }), onclick: () => this.grant(person.id),
        }, t('grantControl'))
        : null;
      return el('li', {
        class: isPresenter ? 'mv-presenter' : '',
        dataset: { testid: `participant-${person.id}`, presenter: isPresenter ? 'true' : 'false' },
      },
      el('span', {}, person.name),
      person.id === meId ? el('span', { class: 'mv-muted' }, t('you')) : null,
      isPresenter ? el('span', { class: 'mv-badge' }, t('presenting')) : null,
      grant);
    }));
    const connected = this.welcomed;
    const presenting = this.isPresenter();
    this.takeButton.hidden = !connected || presenterId !== null;
    this.requestButton.hidden = !connected || presenterId === null || presenting;
    this.releaseButton.hidden = !connected || !presenting;
    this.pointerButton.hidden = !connected || !presenting;
    this.pointerButton.setAttribute('aria-pressed', this.pointerMode ? 'true' : 'false');
    this.banner.hidden = this.following || presenting || presenterId === null;
    this.viewer.root.dataset.role = presenting ? 'presenter' : presenterId === null ? 'free' : this.following ? 'follower' : 'detached';
  }
}
