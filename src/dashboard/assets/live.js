// Live updates: the server pushes the overview cells that changed (Server-Sent Events); this
// applies them in place. Without JavaScript the pages are complete, only not live.
"use strict";
(function () {
  if (!window.EventSource) return;
  var box = document.querySelector(".groups[data-cluster]");
  var url = "/events" + (box ? "?cluster=" + encodeURIComponent(box.getAttribute("data-cluster")) : "");
  var source = new EventSource(url);
  function text(el, sel, value) {
    var t = el.querySelector(sel);
    if (t) t.textContent = value;
  }
  source.addEventListener("cells", function (e) {
    var cells;
    try { cells = JSON.parse(e.data); } catch (err) { return; }
    cells.forEach(function (c) {
      document.querySelectorAll('.cell[data-cluster="' + c.cluster + '"]').forEach(function (el) {
        el.className = "cell " + c.state;
        text(el, ".badge", c.state);
        text(el, ".live .v", c.live === "" ? "none" : c.live);
        text(el, ".health", c.healthy + "/" + c.instances + " healthy");
        text(el, ".why", c.why);
      });
    });
  });
  source.addEventListener("groups", function (e) {
    var msg;
    try { msg = JSON.parse(e.data); } catch (err) { return; }
    if (box && msg.cluster === box.getAttribute("data-cluster")) box.innerHTML = msg.html;
  });
})();
