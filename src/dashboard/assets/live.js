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
      document.querySelectorAll('.cell > a[href="' + c.href + '"]').forEach(function (a) {
        var el = a.parentNode;
        el.className = "cell " + c.state;
        text(el, "b", c.state);
        text(el, ".v", c.live === "" ? "none" : c.live);
        text(el, ".h", c.healthy + "/" + c.instances + " healthy");
        var git = el.querySelector(".git");
        if (c.live !== c.wanted) {
          if (!git) { git = document.createElement("span"); git.className = "git"; el.insertBefore(git, el.querySelector(".h")); }
          git.textContent = "Git " + c.wanted + " ";
        } else if (git) { git.remove(); }
        var why = el.querySelector(".why");
        if (c.why) {
          if (!why) { why = document.createElement("div"); why.className = "why"; el.appendChild(why); }
          why.textContent = c.why;
        } else if (why) { why.remove(); }
      });
    });
  });
  source.addEventListener("groups", function (e) {
    var msg;
    try { msg = JSON.parse(e.data); } catch (err) { return; }
    if (box && msg.cluster === box.getAttribute("data-cluster")) box.innerHTML = msg.html;
  });
})();
