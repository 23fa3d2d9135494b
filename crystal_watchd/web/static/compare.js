// The compare view: the before (scaled to the output's size) and the after as one deep-zoom
// pair in one OpenSeadragon viewer, so both always share the same framing; the after is
// clipped to the right of the split. Keys: + - zoom, 1 = 100 %, 2 = 200 %, 0 = fit,
// t = split / before / after, j k = older / newer job; the split slider takes arrow keys.
// The viewer is OpenSeadragon 6.1.1 (npm openseadragon@6.1.1, static/openseadragon.min.js as
// published; BSD-3-Clause, static/openseadragon-license.txt), served from this page only.
(function () {
  "use strict";
  var el = document.getElementById("viewer");
  if (!el || !window.OpenSeadragon) return;
  var job = el.getAttribute("data-job");
  var width = Number(el.getAttribute("data-width"));
  var height = Number(el.getAttribute("data-height"));
  var split = document.getElementById("split");
  var toggle = document.getElementById("toggle");
  var readout = document.getElementById("zoom-level");
  var modes = ["split", "before", "after"], mode = 0;
  var viewer = OpenSeadragon({
    element: el,
    drawer: "canvas",
    showNavigationControl: false,
    keyboardNavEnabled: false,
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    animationTime: 0.25,
    immediateRender: true,  // the level that fits at once, not every coarser one first
    gestureSettingsMouse: { clickToZoom: false },
    tileSources: [
      { tileSource: "/jobs/" + job + "/tiles/before.dzi", x: 0, y: 0, width: 1 },
      { tileSource: "/jobs/" + job + "/tiles/after.dzi", x: 0, y: 0, width: 1 }
    ]
  });
  function after() { return viewer.world.getItemAt(1); }
  function before() { return viewer.world.getItemAt(0); }
  function apply() {
    var a = after(), b = before();
    if (!a || !b) return;
    var m = modes[mode];
    toggle.textContent = m;
    b.setOpacity(m === "after" ? 0 : 1);
    a.setOpacity(m === "before" ? 0 : 1);
    var left = m === "split" ? Math.round(width * Number(split.value) / 100) : 0;
    a.setClip(new OpenSeadragon.Rect(left, 0, width - left, height));
  }
  function imageZoom() {
    var a = after();
    return a ? a.viewportToImageZoom(viewer.viewport.getZoom(true)) : 0;
  }
  function zoomTo(ratio) {
    var a = after();
    if (a) viewer.viewport.zoomTo(a.imageToViewportZoom(ratio), null, true);
  }
  function show() {
    var z = imageZoom();
    readout.textContent = z ? Math.round(z * 100) + " % of the output" : "";
    // At 100 % and beyond each output pixel is drawn as it is, never smoothed.
    viewer.drawer.setImageSmoothingEnabled(z < 0.999);
  }
  viewer.world.addHandler("add-item", function () {
    if (viewer.world.getItemCount() === 2) { apply(); show(); }
  });
  viewer.addHandler("zoom", show);
  viewer.addHandler("animation-finish", show);
  split.addEventListener("input", function () { mode = 0; apply(); });
  toggle.addEventListener("click", function () { mode = (mode + 1) % modes.length; apply(); });
  document.getElementById("fit").addEventListener("click", function () { viewer.viewport.goHome(); });
  document.getElementById("zoom-100").addEventListener("click", function () { zoomTo(1); });
  document.getElementById("zoom-200").addEventListener("click", function () { zoomTo(2); });
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var target = e.target && e.target.tagName;
    if (target === "INPUT" && e.key !== "t") return; // the slider keeps its arrow keys
    var go = null;
    switch (e.key) {
      case "+": case "=": viewer.viewport.zoomBy(1.5); break;
      case "-": case "_": viewer.viewport.zoomBy(1 / 1.5); break;
      case "1": zoomTo(1); break;
      case "2": zoomTo(2); break;
      case "0": viewer.viewport.goHome(); break;
      case "t": mode = (mode + 1) % modes.length; apply(); break;
      case "j": go = document.getElementById("older"); break;
      case "k": go = document.getElementById("newer"); break;
      default: return;
    }
    e.preventDefault();
    if (go) location.href = go.getAttribute("href");
  });
  window.crystalCompare = { viewer: viewer, zoomTo: zoomTo, imageZoom: imageZoom };
})();
