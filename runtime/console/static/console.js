// flowctl console: live updates over server-sent events. The pages work without this file;
// it only swaps in fragments the server re-rendered (already escaped) and appends log lines as text.
"use strict";
(function () {
  function live(root) {
    var source = new EventSource(root.getAttribute("data-live"));
    source.addEventListener("fragment", function (event) {
      var part = JSON.parse(event.data);
      var target = root.querySelector("#" + part.id);
      if (!target) { return; }
      var focused = document.activeElement;
      if (focused && target.contains(focused) && focused.tagName === "INPUT") { return; }  // not under the user's hands
      target.innerHTML = part.html;
    });
    source.addEventListener("end", function () { source.close(); });  // nothing more will change
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function follow(pre) {
    var source = new EventSource(pre.getAttribute("data-follow"));
    var fresh = true;
    function add(text) {
      if (fresh) { pre.textContent = ""; fresh = false; }
      pre.appendChild(document.createTextNode(text + "\n"));
      pre.scrollTop = pre.scrollHeight;
    }
    source.addEventListener("attempt", function (event) {
      var a = JSON.parse(event.data);
      add("== " + a.step + " attempt " + a.attempt + " ==");
    });
    source.onmessage = function (event) { add(event.data); };
    source.addEventListener("end", function (event) {
      var end = JSON.parse(event.data);
      source.close();
      var state = document.getElementById("run-state");
      if (state) { state.textContent = end.state; state.className = "state state-" + end.state; }
      pre.setAttribute("data-ended", end.state);
      var cancel = document.getElementById("cancel");
      if (cancel) { cancel.form.remove(); }  // nothing left to cancel
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("[data-follow]").forEach(follow);
  });
})();
