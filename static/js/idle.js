// Inactivity timeout, the page's side (the server's is portal.middleware.IdleTimeoutMiddleware).
//
// - While the user types, points or scrolls, tell the server at most once a minute (the
//   server counts only real actions: polls and image prefetches are not activity). A live
//   review page, while visible, counts as activity: its participants watch the presenter.
// - Two minutes before the end, a dialog offers to stay signed in.
// - At the end, and whenever a form is sent, what was typed is kept in sessionStorage (never
//   passwords, hidden fields or CSRF tokens) and given back on that page once the same user
//   has signed in again. The server says when a session ended idle (data-restore); without
//   that, drafts kept "in case" at a submit are dropped: the form went through.
(function () {
  "use strict";
  const dialog = document.querySelector("[data-idle-dialog]");
  if (!dialog || typeof dialog.showModal !== "function" || !dialog.dataset.expiresIn) return;

  const WARNING_SECONDS = 120;
  const PING_SECONDS = 60; // the server writes the activity mark at most once a minute
  const DRAFT_MAX_AGE_MS = 12 * 3600 * 1000;
  const DRAFTS = "mirc-idle-drafts";
  const SKIPPED_TYPES = new Set(["password", "hidden", "file", "submit", "button", "reset", "image"]);

  const user = dialog.dataset.user;
  const keepalive = dialog.querySelector("[data-idle-keepalive]");
  const keepaliveUrl = keepalive.getAttribute("action");
  const csrf = keepalive.querySelector("input[name=csrfmiddlewaretoken]").value;
  const countdown = dialog.querySelector("[data-idle-countdown]");
  let deadline = Date.now() + Number(dialog.dataset.expiresIn) * 1000;
  let lastPing = Date.now(); // loading this page was an action
  let busy = false;
  let ended = false;

  // --- Drafts ------------------------------------------------------------------------------

  function pageKey() {
    return window.location.pathname + window.location.search;
  }

  function readDrafts() {
    try {
      const drafts = JSON.parse(window.sessionStorage.getItem(DRAFTS) || "[]");
      return Array.isArray(drafts) ? drafts : [];
    } catch (error) {
      return [];
    }
  }

  function writeDrafts(drafts) {
    try {
      if (drafts.length) window.sessionStorage.setItem(DRAFTS, JSON.stringify(drafts));
      else window.sessionStorage.removeItem(DRAFTS);
    } catch (error) {
      // Storage full or disabled: nothing more can be kept.
    }
  }

  function fieldsOf(form) {
    return Array.from(form.elements).filter(
      (el) => el.name && el.name !== "csrfmiddlewaretoken" && !SKIPPED_TYPES.has(el.type),
    );
  }

  function changed(el) {
    if (el.type === "checkbox" || el.type === "radio") return el.checked !== el.defaultChecked;
    if (el.tagName === "SELECT") {
      return Array.from(el.options).some((option) => option.selected !== option.defaultSelected);
    }
    return el.value !== el.defaultValue;
  }

  function valueOf(el) {
    if (el.type === "checkbox" || el.type === "radio") return [el.name, el.value, el.checked];
    if (el.type === "select-multiple") {
      return [el.name, Array.from(el.selectedOptions).map((option) => option.value)];
    }
    return [el.name, el.value];
  }

  function pageForms() {
    return Array.from(document.forms).filter((form) => !dialog.contains(form));
  }

  function saveDrafts(kind) {
    const forms = [];
    pageForms().forEach((form, index) => {
      const fields = fieldsOf(form);
      if (!fields.some(changed)) return; // nothing typed here
      forms.push({ index, action: form.getAttribute("action") || "", values: fields.map(valueOf) });
    });
    const page = pageKey();
    const drafts = readDrafts().filter((draft) => !(draft.page === page && draft.user === user));
    if (forms.length) drafts.push({ user, page, kind, at: Date.now(), forms });
    writeDrafts(drafts);
  }

  function fill(form, values) {
    const fields = fieldsOf(form);
    const used = new Set();
    for (const [name, value, checked] of values) {
      const el = fields.find(
        (field) =>
          !used.has(field) &&
          field.name === name &&
          (typeof checked !== "boolean" || field.value === value),
      );
      if (!el) continue;
      used.add(el);
      if (typeof checked === "boolean") el.checked = checked;
      else if (Array.isArray(value)) {
        for (const option of el.options) option.selected = value.includes(option.value);
      } else el.value = value;
      el.dispatchEvent(new Event("input", { bubbles: true }));
      el.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  function restoreDrafts() {
    const endedIdle = dialog.dataset.restore === "1";
    const page = pageKey();
    const forms = pageForms();
    const kept = [];
    let restored = false;
    for (const draft of readDrafts()) {
      if (draft.user !== user) continue; // another user's input never shows here
      if (Date.now() - draft.at > DRAFT_MAX_AGE_MS) continue;
      if (draft.kind === "pending" && !endedIdle) continue; // that form went through
      if (draft.page !== page) {
        kept.push({ ...draft, kind: "kept" }); // given back when the user opens that page
        continue;
      }
      for (const saved of draft.forms) {
        const form =
          forms.find((f, index) => index === saved.index && (f.getAttribute("action") || "") === saved.action) ||
          forms.find((f) => (f.getAttribute("action") || "") === saved.action);
        if (form) {
          fill(form, saved.values);
          restored = true;
        }
      }
    }
    writeDrafts(kept);
    if (restored) toast(dialog.dataset.restoredMessage);
  }

  function toast(message) {
    const toasts = document.querySelector("[data-toasts]");
    if (!toasts || !message) return;
    const note = document.createElement("div");
    note.className = "toast";
    note.setAttribute("data-idle-restored", "");
    note.textContent = message;
    toasts.appendChild(note);
    setTimeout(() => note.remove(), 10000);
  }

  // --- Talking to the server ----------------------------------------------------------------

  // The endpoint answers {"expires_in": seconds}; a session already over gets the login
  // redirect (seen here as an opaque redirect): null. A network failure: undefined.
  async function ask(method) {
    try {
      const response = await fetch(keepaliveUrl, {
        method,
        redirect: "manual",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, Accept: "application/json" },
      });
      if (response.type === "opaqueredirect" || response.status === 401) return null;
      if (!response.ok) return undefined;
      return await response.json();
    } catch (error) {
      return undefined;
    }
  }

  function sync(answer) {
    if (answer === null) {
      end();
      return;
    }
    if (answer && typeof answer.expires_in === "number") {
      deadline = Date.now() + answer.expires_in * 1000;
    }
  }

  async function ping() {
    lastPing = Date.now();
    sync(await ask("POST"));
  }

  function end() {
    if (ended) return;
    ended = true;
    saveDrafts("kept");
    const login = new URL(dialog.dataset.loginUrl, window.location.href);
    login.searchParams.set("next", pageKey());
    window.location.assign(login.href);
  }

  function isLiveReview() {
    return Array.from(document.querySelectorAll("[data-mirc-viewer]")).some((viewer) => {
      const config = document.getElementById(viewer.dataset.configId || "");
      try {
        return Boolean(config && JSON.parse(config.textContent).room);
      } catch (error) {
        return false;
      }
    });
  }
  const live = isLiveReview();

  function formatted(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  async function tick() {
    if (busy || ended) return;
    const visible = document.visibilityState === "visible";
    if (live && visible && !dialog.open && Date.now() - lastPing >= PING_SECONDS * 1000) {
      busy = true;
      await ping();
      busy = false;
      return;
    }
    let left = (deadline - Date.now()) / 1000;
    if (left <= WARNING_SECONDS && (!dialog.open || left <= 0)) {
      // Another tab may have kept the session alive: ask before warning or ending.
      busy = true;
      const answer = await ask("GET");
      busy = false;
      sync(answer);
      if (ended) return;
      left = (deadline - Date.now()) / 1000;
      if (left <= 0 && answer === undefined) {
        end(); // the server cannot be asked: act on our own count
        return;
      }
    }
    if (left <= WARNING_SECONDS && left > 0) {
      countdown.textContent = formatted(left);
      if (!dialog.open) dialog.showModal();
    } else if (dialog.open) {
      dialog.close();
    }
  }

  function onActivity() {
    if (dialog.open || ended || busy) return;
    if (Date.now() - lastPing >= PING_SECONDS * 1000) ping();
  }

  keepalive.addEventListener("submit", async (event) => {
    event.preventDefault();
    await ping();
    if (!ended) dialog.close();
  });

  document.addEventListener(
    "submit",
    (event) => {
      const form = event.target;
      if (!(form instanceof HTMLFormElement) || dialog.contains(form)) return;
      if (form.getAttribute("action") === dialog.dataset.logoutUrl) {
        writeDrafts([]); // signing out on purpose: keep nothing typed in this tab
        return;
      }
      // Kept in case the session ended meanwhile (a sleeping laptop stops our timers).
      saveDrafts("pending");
    },
    true,
  );
  for (const type of ["keydown", "pointerdown", "wheel", "touchstart", "input", "scroll"]) {
    document.addEventListener(type, onActivity, { capture: true, passive: true });
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") tick();
  });

  restoreDrafts();
  setInterval(tick, 1000);
})();
