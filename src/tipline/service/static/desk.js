// Tipline review desk: reveal-per-image, video controls, grading shortcuts, exposure heartbeat.
// No media is fetched unfiltered until the analyst asks for it, one item at a time.
(function () {
  "use strict";
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

  function hideAllMedia(message) {
    document.querySelectorAll(".media").forEach(function (m) {
      m.querySelectorAll("img, video").forEach(function (el) { el.removeAttribute("src"); el.hidden = true; });
      if (!m.querySelector(".placeholder.stopped")) {
        var p = document.createElement("div");
        p.className = "placeholder stopped";
        p.textContent = "Media hidden: " + message;
        m.appendChild(p);
      }
      m.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    });
  }

  // Exposure heartbeat while a page that shows media is visible.
  var beatCluster = document.body.getAttribute("data-beat");
  if (beatCluster) {
    var send = function () {
      if (document.visibilityState !== "visible") { return; }
      fetch("/desk/exposure/beat", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ cluster_id: parseInt(beatCluster, 10) })
      }).then(function (r) { return r.json(); }).then(function (s) {
        var badge = document.getElementById("exposure");
        if (badge && typeof s.today_minutes === "number") {
          badge.textContent = Math.round(s.today_minutes) + "/" + s.cap_minutes + " min";
        }
        if (s.state && s.state !== "ok") { hideAllMedia(s.message || "exposure limit"); }
      }).catch(function () {});
    };
    setInterval(send, 20000);
    document.addEventListener("visibilitychange", send);
  }

  // Reveal / hide, one item at a time.
  document.querySelectorAll("button.reveal").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var media = btn.closest(".media");
      var video = media.querySelector("video");
      if (video) {
        video.muted = true;
        video.autoplay = false;
        video.preload = "metadata"; // the first frame and duration; playing is a further click
        video.src = video.getAttribute("data-src");
        video.load();
        video.hidden = false;
        var speed = media.querySelector("select.speed");
        video.addEventListener("loadedmetadata", function () {
          video.playbackRate = parseFloat(speed ? speed.value : "1") || 1;
        });
        var ph = media.querySelector(".video-placeholder");
        if (ph) { ph.hidden = true; }
        var ctl = media.querySelector(".video-controls");
        if (ctl) { ctl.hidden = false; }
        btn.hidden = true;
        return;
      }
      var full = media.querySelector("img.full");
      var preview = media.querySelector("img.preview");
      full.src = full.getAttribute("data-src");
      full.hidden = false;
      if (preview) { preview.hidden = true; }
      btn.hidden = true;
      var hide = media.querySelector("button.hide");
      if (hide) { hide.hidden = false; }
    });
  });
  document.querySelectorAll("button.hide").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var media = btn.closest(".media");
      var full = media.querySelector("img.full");
      full.removeAttribute("src");
      full.hidden = true;
      var preview = media.querySelector("img.preview");
      if (preview) { preview.hidden = false; }
      btn.hidden = true;
      media.querySelector("button.reveal").hidden = false;
    });
  });
  document.querySelectorAll("select.speed").forEach(function (sel) {
    sel.addEventListener("change", function () {
      var v = sel.closest(".media").querySelector("video");
      if (v) { v.playbackRate = parseFloat(sel.value) || 1; }
    });
  });
  document.querySelectorAll("button.step").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var v = btn.closest(".media").querySelector("video");
      if (!v) { return; }
      v.pause();
      v.currentTime = Math.max(0, v.currentTime + parseInt(btn.getAttribute("data-step"), 10) / 25);
    });
  });
  // Never autoplay: pause anything that starts without a user gesture on its own controls.
  document.querySelectorAll("video").forEach(function (v) { v.autoplay = false; v.muted = true; });

  // Grading shortcuts: the key shown beside an answer picks it; Enter submits.
  var form = document.getElementById("grade-form");
  if (form) {
    document.addEventListener("keydown", function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      var t = ev.target;
      if (t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" || (t.tagName === "INPUT" && t.type === "text"))) { return; }
      if (ev.key === "Enter") {
        if (t && t.tagName === "BUTTON") { return; }
        ev.preventDefault();
        if (form.reportValidity()) { form.submit(); }
        return;
      }
      var input = form.querySelector('input[data-key="' + CSS.escape(ev.key.toLowerCase()) + '"]');
      if (!input) { return; }
      ev.preventDefault();
      if (input.type === "checkbox") { input.checked = !input.checked; } else { input.checked = true; }
      input.focus();
    });
  }

  // Settings: show slider values.
  document.querySelectorAll('form.prefs input[type="range"]').forEach(function (r) {
    r.addEventListener("input", function () {
      var out = r.parentNode.querySelector("output");
      if (out) { out.textContent = r.value; }
    });
  });
})();
