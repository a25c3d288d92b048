// SEER's pages: live updates. A page whose <main> has data-live listens to the server-sent
// events at that path and, when something changed, fetches itself again and swaps <main>'s
// content (keeping the focused form's values). No framework, no third-party code.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || !main.dataset.live || !window.EventSource) return;
  var status = document.getElementById("live-status");
  var pending = null;
  var busy = false;
  function setStatus(text) { if (status) status.textContent = text; }
  function refresh() {
    pending = null;
    if (busy) { pending = setTimeout(refresh, 250); return; }
    var active = document.activeElement;
    if (active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      pending = setTimeout(refresh, 1000); // do not pull a form from under the person typing
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (fresh) {
          main.innerHTML = fresh.innerHTML;
          main.dataset.updated = String(Date.now());
          document.dispatchEvent(new CustomEvent("seer:updated"));
          setStatus("updated " + new Date().toLocaleTimeString());
        }
      })
      .catch(function (error) { setStatus("update failed: " + error.message); })
      .finally(function () { busy = false; });
  }
  var source = new EventSource(main.dataset.live);
  source.addEventListener("open", function () { setStatus("live"); main.dataset.liveConnected = "1"; });
  source.addEventListener("changed", function () {
    if (!pending) pending = setTimeout(refresh, 200); // coalesce bursts
  });
  source.addEventListener("error", function () { setStatus("reconnecting…"); });
})();
