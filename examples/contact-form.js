// Posts the contact form with fetch and follows the job's progress with
// server-sent events. Without JavaScript the form still works: the webhook
// redirects a browser to its own progress page.
(function () {
  "use strict";
  var form = document.getElementById("contact");
  var api = form.getAttribute("action").replace(/\/api\/queue\/submit$/, "");
  // One key per page load: a double click or a retry gives the same job.
  var key = "form-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  var bar = document.getElementById("bar");
  var state = document.getElementById("state");

  function show(s) {
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
      document.getElementById("result").hidden = false;
    } else {
      state.textContent = "The prototype could not be built (" + s.status + ")" + (s.reason ? ": " + s.reason : ".");
      state.className = "error";
    }
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    document.getElementById("progress").hidden = false;
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { "Accept": "application/json", "Idempotency-Key": key },
    })
      .then(function (r) {
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      })
      .then(function (r) {
        if (!r.ok) {
          state.textContent = r.body.detail || r.body.error;
          state.className = "error";
          button.disabled = false;
          return;
        }
        form.hidden = true;
        var events = new EventSource(api + "/api/queue/" + encodeURIComponent(r.body.job_id) + "/events");
        events.addEventListener("status", function (ev) {
          var s = JSON.parse(ev.data);
          show(s);
          if (s.status !== "pending" && s.status !== "processing") events.close();
        });
      })
      .catch(function (err) {
        state.textContent = "Could not send the form: " + err;
        state.className = "error";
        button.disabled = false;
      });
  });
})();
