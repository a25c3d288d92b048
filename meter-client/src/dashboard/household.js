// The household dashboard's ε control: on each move, ask this meter-client for a fresh
// preview (drawn locally, never sent) and show its numbers. No framework, no third-party code.
(function () {
  "use strict";
  function wire() {
    var slider = document.getElementById("epsilon");
    if (!slider || slider.dataset.wired) return;
    slider.dataset.wired = "1";
    var timer = null;
    function set(id, text) {
      var el = document.querySelector('[data-testid="' + id + '"]');
      if (el) el.textContent = text;
    }
    function update() {
      timer = null;
      set("preview-epsilon", Number(slider.value).toFixed(3));
      fetch("/preview?epsilon=" + encodeURIComponent(slider.value), { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (p) {
          set("preview-scale", p.scale_wh.toFixed(1));
          set("preview-mae", p.mean_abs_noise_wh.toFixed(1));
          set("preview-readings-left", String(p.readings_left));
          var body = document.getElementById("preview-rows");
          if (body) {
            var rows = body.querySelectorAll("tr");
            p.points.forEach(function (q, i) {
              var cell = rows[i] && rows[i].querySelector('[data-testid="preview-noisy"]');
              if (cell) cell.textContent = String(q.noisy_wh);
            });
          }
        })
        .catch(function (e) { set("preview-error", "preview failed: " + e.message); });
    }
    slider.addEventListener("input", function () {
      if (!timer) timer = setTimeout(update, 120);
    });
  }
  document.addEventListener("DOMContentLoaded", wire);
  document.addEventListener("seer:updated", wire);
  wire();
})();
