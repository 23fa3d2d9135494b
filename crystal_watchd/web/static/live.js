// Live refresh: the server sends an event whenever a job changes; this swaps in the fresh
// page. Without JavaScript the page still works and reloads itself every 15 s.
(function () {
  "use strict";
  if (!window.EventSource || !window.fetch || !window.DOMParser) return;
  var timer = null, busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Requested-With": "live" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main"), current = document.getElementById("main");
        if (fresh && current && fresh.innerHTML !== current.innerHTML) current.replaceWith(fresh);
        var state = doc.getElementById("live-state"), here = document.getElementById("live-state");
        if (state && here) here.textContent = state.textContent;
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; schedule(); } });
  }
  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 250); }
  var source = new EventSource("/events");
  source.addEventListener("job", schedule);
  source.onopen = function () { document.documentElement.className = "live"; };
  // Refresh now and then anyway, so "waiting since" ages move on a quiet day.
  setInterval(refresh, 60000);
})();
