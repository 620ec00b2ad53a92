// reelstate operator page. The server renders every fragment (escaped); this script only
// fetches them with the admin token, swaps them in, and runs the confirmed actions.
// The token lives in sessionStorage only: gone when the tab closes, never in a URL or cookie.
(function () {
  "use strict";
  var KEY = "reelstate.adminToken";
  var view = document.getElementById("view");
  var stamp = document.getElementById("stamp");
  var result = document.getElementById("result");
  var tokenDialog = document.getElementById("token-dialog");
  var confirmDialog = document.getElementById("confirm-dialog");
  var path = location.pathname;
  var fragment = "/ui/fragments" + (path === "/" ? "/overview" : path.slice(3)) + location.search;
  var live = path === "/" || path.indexOf("/ui/videos/") === 0;
  var pending = null;

  function authHeaders() {
    var t = sessionStorage.getItem(KEY);
    return t ? { Authorization: "Bearer " + t } : {};
  }

  function showTokenState() {
    document.getElementById("token-state").textContent =
      sessionStorage.getItem(KEY) ? "token set (this tab)" : "no token";
  }

  function load() {
    return fetch(fragment, { headers: authHeaders(), cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          if (!tokenDialog.open) tokenDialog.showModal();
          return;
        }
        return r.text().then(function (html) {
          view.innerHTML = html;
          view.setAttribute("data-status", String(r.status));
          airtableRate();
          stamp.textContent = (live ? "live · " : "") + "updated " + new Date().toLocaleTimeString();
        });
      })
      .catch(function (e) {
        stamp.textContent = "cannot reach the server (" + e.message + "); retrying";
      });
  }

  // The Airtable request rate now, from the counter's change between two refreshes: the
  // server keeps no history for the page.
  var lastSample = null;
  function airtableRate() {
    var el = document.querySelector("#airtable [data-requests]");
    var out = document.getElementById("airtable-rate");
    if (!el || !out) return;
    var n = Number(el.getAttribute("data-requests"));
    var t = Date.now();
    if (lastSample && t - lastSample.t > 500 && n >= lastSample.n) {
      var perSecond = ((n - lastSample.n) * 1000) / (t - lastSample.t);
      out.textContent = "now about " + perSecond.toFixed(1) + " requests/s (the base allows 5)";
    } else {
      out.textContent = "measuring the current rate…";
    }
    lastSample = { n: n, t: t };
  }

  function schedule() {
    if (!live) return;
    setTimeout(function () {
      (document.hidden ? Promise.resolve() : load()).then(schedule, schedule);
    }, 2000);
  }

  document.getElementById("token-form").addEventListener("submit", function () {
    var v = document.getElementById("token-input").value.trim();
    if (v) sessionStorage.setItem(KEY, v);
    document.getElementById("token-input").value = "";
    showTokenState();
    load();
  });
  document.getElementById("forget-token").addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    showTokenState();
  });
  document.getElementById("goto-video").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var id = document.getElementById("goto-input").value.trim();
    if (id) location.href = "/ui/videos/" + encodeURIComponent(id);
  });

  // A bulk retry names how many videos it retries, once; then one call per video.
  function bulkRetry() {
    var boxes = view.querySelectorAll("input[data-retry]:checked");
    var ids = Array.prototype.map.call(boxes, function (c) { return c.getAttribute("data-retry"); });
    if (ids.length === 0) {
      showResult(false, "Retry selected failed videos", "No failed video is selected.");
      return;
    }
    pending = {
      method: "POST",
      urls: ids.map(function (id) { return "/videos/" + encodeURIComponent(id) + "/retry"; })
    };
    document.getElementById("confirm-text").textContent =
      "Retry " + ids.length + " failed video" + (ids.length === 1 ? "" : "s") + "?";
    document.getElementById("confirm-call").textContent =
      "POST /videos/{id}/retry for " + ids.join(", ");
    confirmDialog.showModal();
  }

  function showResult(ok, title, body) {
    result.hidden = false;
    result.className = ok ? "result ok" : "result failed";
    document.getElementById("result-title").textContent = title;
    document.getElementById("result-body").textContent = body;
  }

  function pretty(body) {
    try { return JSON.stringify(JSON.parse(body), null, 2); } catch (e) { return body; }
  }

  // One after the other, so that each answer is shown against its call.
  function runBulk(call) {
    var lines = [];
    var allOk = true;
    var headers = authHeaders();
    headers["Content-Type"] = "application/json";
    var chain = Promise.resolve();
    call.urls.forEach(function (url) {
      chain = chain.then(function () {
        return fetch(url, { method: call.method, headers: headers, body: "{}" })
          .then(function (r) {
            return r.text().then(function (body) {
              if (!r.ok) allOk = false;
              lines.push(call.method + " " + url + " → " + r.status + " " + r.statusText + "\n" + pretty(body));
            });
          })
          .catch(function (e) {
            allOk = false;
            lines.push(call.method + " " + url + " failed: " + String(e));
          });
      });
    });
    return chain.then(function () {
      showResult(allOk, "Retried " + call.urls.length + " video" + (call.urls.length === 1 ? "" : "s"),
        lines.join("\n\n"));
      return load();
    });
  }

  // Every action asks first, then shows the API's answer as it came.
  view.addEventListener("click", function (ev) {
    if (ev.target.closest("button[data-bulk-retry]")) {
      bulkRetry();
      return;
    }
    var b = ev.target.closest("button[data-action]");
    if (!b) return;
    pending = {
      method: b.getAttribute("data-method"),
      url: b.getAttribute("data-action"),
      body: b.getAttribute("data-body")
    };
    document.getElementById("confirm-text").textContent = b.getAttribute("data-confirm");
    document.getElementById("confirm-call").textContent =
      pending.method + " " + pending.url + (pending.body ? " " + pending.body : "");
    confirmDialog.showModal();
  });
  document.getElementById("confirm-cancel").addEventListener("click", function () {
    pending = null;
    confirmDialog.close();
  });
  document.getElementById("confirm-ok").addEventListener("click", function () {
    confirmDialog.close();
    if (!pending) return;
    var call = pending;
    pending = null;
    if (call.urls) {
      runBulk(call);
      return;
    }
    var headers = authHeaders();
    headers["Content-Type"] = "application/json";
    fetch(call.url, { method: call.method, headers: headers, body: call.body || "{}" })
      .then(function (r) {
        return r.text().then(function (body) {
          var pretty = body;
          try { pretty = JSON.stringify(JSON.parse(body), null, 2); } catch (e) { /* as sent */ }
          result.hidden = false;
          result.className = r.ok ? "result ok" : "result failed";
          document.getElementById("result-title").textContent =
            call.method + " " + call.url + " → " + r.status + " " + r.statusText;
          document.getElementById("result-body").textContent = pretty;
          if (r.status === 401) tokenDialog.showModal();
          return load();
        });
      })
      .catch(function (e) {
        result.hidden = false;
        result.className = "result failed";
        document.getElementById("result-title").textContent = call.method + " " + call.url + " failed";
        document.getElementById("result-body").textContent = String(e);
      });
  });
  document.getElementById("result-close").addEventListener("click", function () {
    result.hidden = true;
  });

  showTokenState();
  load().then(schedule, schedule);
})();
