// Live progress of one job, from the webhook's event stream.
(function () {
  "use strict";
  var job = new URLSearchParams(location.search).get("job");
  var bar = document.getElementById("bar");
  var state = document.getElementById("state");
  if (!job) {
    state.textContent = "No job was given.";
    state.className = "error";
    return;
  }
  var base = location.pathname.replace(/\/thanks$/, "");
  var events = new EventSource(base + "/api/queue/" + encodeURIComponent(job) + "/events");
  events.addEventListener("status", function (e) {
    var s = JSON.parse(e.data);
    document.body.setAttribute("data-status", s.status);
    if (s.status === "pending") {
      bar.value = 2;
      state.textContent = "Waiting in the queue (position " + s.position + ").";
    } else if (s.status === "processing") {
      bar.value = s.percent;
      state.textContent = "Working on it: " + s.stage + " (" + s.percent + "%).";
    } else if (s.status === "completed") {
      bar.value = 100;
      state.textContent = "Done.";
      var a = document.getElementById("url");
      a.href = s.url;
      a.textContent = s.url;
      document.getElementById("link").hidden = false;
      events.close();
    } else {
      state.textContent = "The prototype could not be built (" + s.status + ")" + (s.reason ? ": " + s.reason : ".");
      state.className = "error";
      events.close();
    }
  });
})();
