// Live notifications: the server pushes new ones over /ws/notifications/.
(function () {
  "use strict";
  // data-live: the session may open the socket (not before its second factor is passed).
  const badge = document.querySelector("[data-notification-badge][data-live] .badge");
  const toasts = document.querySelector("[data-toasts]");
  if (!badge || !("WebSocket" in window)) return;

  function showToast(message, url) {
    const toast = document.createElement(url ? "a" : "div");
    toast.className = "toast";
    toast.textContent = message;
    if (url) toast.href = url;
    toasts.appendChild(toast);
    setTimeout(() => toast.remove(), 8000);
  }

  let delay = 1000;
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws/notifications/`);
    socket.addEventListener("open", () => { delay = 1000; });
    socket.addEventListener("message", (event) => {
      let data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (data.type !== "notification") return;
      const count = (parseInt(badge.dataset.count, 10) || 0) + 1;
      badge.dataset.count = String(count);
      badge.textContent = String(count);
      showToast(data.message, data.url);
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401) return; // signed out
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }
  connect();
})();
