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
      document.querySelectorAll('.overview td > p > a[href="' + c.href + '"]').forEach(function (a) {
        var el = a.parentNode;
        el.className = c.state;
        text(el, "b", c.state);
        text(el, "i", c.live === "" ? "none" : c.live);
        text(el, "small", c.healthy + "/" + c.instances + " healthy");
        var git = el.querySelector(".git");
        if (c.live !== c.wanted) {
          if (!git) { git = document.createElement("span"); git.className = "git"; el.insertBefore(git, el.querySelector("small")); }
          git.textContent = "Git " + c.wanted + " ";
        } else if (git) { git.remove(); }
        var why = el.querySelector(".why");
        if (c.why) {
          if (!why) { el.appendChild(document.createElement("br")); why = document.createElement("span"); why.className = "why"; el.appendChild(why); }
          why.textContent = c.why;
        } else if (why) { why.previousSibling.remove(); why.remove(); }
      });
    });
  });
  source.addEventListener("groups", function (e) {
    var msg;
    try { msg = JSON.parse(e.data); } catch (err) { return; }
    if (box && msg.cluster === box.getAttribute("data-cluster")) box.innerHTML = msg.html;
  });
})();
