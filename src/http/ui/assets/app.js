// reelstate operator page. The server renders every fragment (escaped); this script only
// fetches them with the admin token, swaps in the sections that changed, shows times in the
// reader's zone, and runs the confirmed actions.
// The token lives in sessionStorage only: gone when the tab closes, never in a URL or cookie.
(function () {
  "use strict";
  var KEY = "reelstate.adminToken";
  var PAUSE_KEY = "reelstate.paused";
  var PERIOD = 2000;
  var view = document.getElementById("view");
  var stamp = document.getElementById("stamp");
  var pauseButton = document.getElementById("pause");
  var result = document.getElementById("result");
  var tokenDialog = document.getElementById("token-dialog");
  var tokenError = document.getElementById("token-error");
  var confirmDialog = document.getElementById("confirm-dialog");
  var path = location.pathname;
  var fragment = "/ui/fragments" + (path === "/" ? "/overview" : path.slice(3)) + location.search;
  // Every page but one event's is live: its fragment is fetched again every PERIOD.
  var live = path.indexOf("/ui/events/") !== 0;
  var paused = sessionStorage.getItem(PAUSE_KEY) === "1";
  var pending = null;
  // The server's HTML of each top-level section as last swapped in. A refresh compares
  // against these (not against the page, which the script decorates) and replaces only the
  // sections whose HTML changed, so a selection, a scroll position or a half-typed prompt in
  // an unchanged section stays as it was.
  var sections = [];
  var refreshes = 0;
  var skipped = 0;
  var updatedAt = null;

  function authHeaders() {
    var t = sessionStorage.getItem(KEY);
    return t ? { Authorization: "Bearer " + t } : {};
  }

  function showTokenState() {
    document.getElementById("token-state").textContent =
      sessionStorage.getItem(KEY) ? "token set (this tab)" : "no token";
  }

  // The dialog says why it is open again when the server refused the token it was given.
  function askToken(refused) {
    if (refused) {
      tokenError.textContent = refused;
      tokenError.hidden = false;
    }
    if (!tokenDialog.open) tokenDialog.showModal();
  }

  function showStamp() {
    var when = updatedAt ? "updated " + updatedAt.toLocaleTimeString() : "loading…";
    stamp.textContent = !live ? when : paused ? "paused · " + when + " · the page holds still" : "live · " + when;
    stamp.setAttribute("data-refreshes", String(refreshes));
    stamp.setAttribute("data-skipped", String(skipped));
    stamp.className = paused ? "stamp paused" : "stamp";
    pauseButton.hidden = !live;
    pauseButton.textContent = paused ? "Resume updates" : "Pause updates";
    pauseButton.setAttribute("aria-pressed", paused ? "true" : "false");
  }

  // `force`: the reader asked for it (opening the page, a token, an action, Resume). A
  // periodic load that comes back after the reader paused is dropped: paused means still.
  function load(force) {
    var sentToken = sessionStorage.getItem(KEY);
    return fetch(fragment, { headers: authHeaders(), cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          if (sentToken) {
            sessionStorage.removeItem(KEY);
            showTokenState();
            askToken("The server refused this token (401 Unauthorized). Check the value of REELSTATE_ADMIN_TOKEN and enter it again.");
          } else {
            askToken(null);
          }
          return;
        }
        return r.text().then(function (html) {
          if (paused && !force) return;
          swap(html);
          view.setAttribute("data-status", String(r.status));
          airtableRate();
          refreshes += 1;
          updatedAt = new Date();
          titleFromPage();
          showStamp();
        });
      })
      .catch(function (e) {
        stamp.textContent = "cannot reach the server (" + e.message + "); retrying";
      });
  }

  function swap(html) {
    var tpl = document.createElement("template");
    tpl.innerHTML = html;
    var fresh = Array.prototype.slice.call(tpl.content.children);
    var incoming = fresh.map(function (n) { return n.outerHTML; });
    var current = view.children;
    if (incoming.length !== sections.length || current.length !== sections.length) {
      view.textContent = "";
      fresh.forEach(function (n) { view.appendChild(n); });
      decorate(view);
    } else {
      for (var i = 0; i < incoming.length; i++) {
        if (incoming[i] === sections[i]) continue;
        var old = current[i];
        var kept = keep(old);
        if (patchRows(old, fresh[i], sections[i])) {
          restore(old, kept);
          decorate(old);
          continue;
        }
        view.replaceChild(fresh[i], old);
        restore(fresh[i], kept);
        decorate(fresh[i]);
      }
    }
    sections = incoming;
  }

  // A row's stable name: its first data- attribute (data-event="…", data-video="…").
  function rowKey(tr) {
    var a = tr.attributes[0];
    return a && a.name.indexOf("data-") === 0 ? a.name + "=" + a.value : null;
  }

  // A section's HTML without its table rows.
  function frame(el) {
    var c = el.cloneNode(true);
    c.querySelectorAll("tbody > tr").forEach(function (tr) { tr.remove(); });
    return c.outerHTML;
  }

  // When only rows of a section changed (its frame is as it was, every row named by a key),
  // only those rows are replaced: an unchanged row keeps its node, and a selection in it.
  // `was` is the section's HTML as last swapped in. False, touching nothing, otherwise.
  function patchRows(old, fresh, was) {
    var tpl = document.createElement("template");
    tpl.innerHTML = was;
    var server = tpl.content.firstElementChild;
    if (!server || frame(server) !== frame(fresh)) return false;
    var liveBodies = old.querySelectorAll("tbody");
    var serverBodies = server.querySelectorAll("tbody");
    var freshBodies = fresh.querySelectorAll("tbody");
    if (liveBodies.length !== serverBodies.length || freshBodies.length !== serverBodies.length) return false;
    var plans = [];
    for (var b = 0; b < freshBodies.length; b++) {
      var live = liveBodies[b].children;
      var before = serverBodies[b].children;
      if (live.length !== before.length) return false;
      var prior = new Map();
      for (var i = 0; i < before.length; i++) {
        var k = rowKey(before[i]);
        if (k === null || prior.has(k)) return false;
        prior.set(k, { html: before[i].outerHTML, node: live[i] });
      }
      var wanted = [];
      var seen = new Set();
      var rows = Array.prototype.slice.call(freshBodies[b].children);
      for (var j = 0; j < rows.length; j++) {
        var key = rowKey(rows[j]);
        if (key === null || seen.has(key)) return false;
        seen.add(key);
        var p = prior.get(key);
        wanted.push(p && p.html === rows[j].outerHTML ? p.node : rows[j]);
      }
      plans.push({ body: liveBodies[b], wanted: wanted });
    }
    plans.forEach(function (plan) {
      var keepRows = new Set(plan.wanted);
      Array.prototype.slice.call(plan.body.children).forEach(function (tr) {
        if (!keepRows.has(tr)) tr.remove();
      });
      // Kept rows stay where they are; new ones go in between, so a kept row never moves
      // (a move would drop a selection in it) unless the order itself changed.
      var cursor = plan.body.firstElementChild;
      plan.wanted.forEach(function (tr) {
        if (tr === cursor) {
          cursor = cursor.nextElementSibling;
        } else {
          plan.body.insertBefore(tr, cursor);
        }
      });
    });
    return true;
  }

  // What a reader set inside a section that is about to be replaced: ticked boxes, open
  // details, typed values.
  function keep(el) {
    var k = { checked: [], open: [], values: {} };
    el.querySelectorAll("input[data-retry]:checked").forEach(function (c) {
      k.checked.push(c.getAttribute("data-retry"));
    });
    el.querySelectorAll("details[id][open]").forEach(function (d) { k.open.push(d.id); });
    el.querySelectorAll("textarea[id], input[id]:not([type=checkbox])").forEach(function (f) {
      k.values[f.id] = f.value;
    });
    return k;
  }

  function restore(el, k) {
    k.checked.forEach(function (id) {
      var c = el.querySelector('input[data-retry="' + CSS.escape(id) + '"]');
      if (c) c.checked = true;
    });
    k.open.forEach(function (id) {
      var d = el.querySelector("#" + CSS.escape(id));
      if (d) d.open = true;
    });
    Object.keys(k.values).forEach(function (id) {
      var f = el.querySelector("#" + CSS.escape(id));
      if (f && k.values[id]) f.value = k.values[id];
    });
  }

  // Times arrive in UTC; the reader sees them in their own zone, named, with their age,
  // and UTC on hover.
  var LOCAL = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", timeZoneName: "short" };
  function decorate(root) {
    // A stacked row (narrow screens) names each value with its column's header.
    root.querySelectorAll("table.stack").forEach(function (table) {
      var names = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
        return th.textContent;
      });
      table.querySelectorAll("tbody tr").forEach(function (tr) {
        Array.prototype.forEach.call(tr.children, function (td, i) {
          if (names[i]) td.setAttribute("data-label", names[i]);
        });
      });
    });
    // Rows kept by a refresh are decorated already: a time is localised once.
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      t.setAttribute("data-local", "");
      t.textContent = d.toLocaleString(undefined, LOCAL);
      t.title = "UTC: " + t.title.replace(/ UTC$/, "");
      var age = document.createElement("span");
      age.className = "age muted";
      t.after(age);
    });
    ages(root);
  }

  function ages(root) {
    var now = Date.now();
    root.querySelectorAll("time[datetime] + span.age").forEach(function (a) {
      var s = Math.round((now - new Date(a.previousElementSibling.getAttribute("datetime")).getTime()) / 1000);
      var text = " (" + (s < -5 ? "in " + span(-s) : s < 5 ? "now" : span(s) + " ago") + ")";
      if (a.textContent !== text) a.textContent = text;
    });
  }

  function span(s) {
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " days";
  }

  // A video's tab names the video and where it is.
  function titleFromPage() {
    var st = document.getElementById("video-status");
    var base = document.title.split(" · ")[0].replace(/ \(.*\)$/, "");
    if (st) document.title = base + " (" + st.getAttribute("data-status") + ") · reelstate";
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
    var text = "measuring the current rate…";
    if (lastSample && t - lastSample.t > 500 && n >= lastSample.n) {
      var perSecond = ((n - lastSample.n) * 1000) / (t - lastSample.t);
      text = "now about " + perSecond.toFixed(1) + " requests/s (the base allows 5)";
    }
    if (out.textContent !== text) out.textContent = text;
    lastSample = { n: n, t: t };
  }

  function tick() {
    var next;
    if (paused) {
      skipped += 1;
      showStamp();
      next = Promise.resolve();
    } else if (document.hidden) {
      next = Promise.resolve();
    } else {
      ages(view);
      next = load(false);
    }
    next.then(schedule, schedule);
  }

  function schedule() {
    if (live) setTimeout(tick, PERIOD);
  }

  pauseButton.addEventListener("click", function () {
    paused = !paused;
    if (paused) sessionStorage.setItem(PAUSE_KEY, "1");
    else sessionStorage.removeItem(PAUSE_KEY);
    showStamp();
    if (!paused) load(true);
  });
  document.getElementById("token-form").addEventListener("submit", function () {
    var v = document.getElementById("token-input").value.trim();
    if (v) sessionStorage.setItem(KEY, v);
    document.getElementById("token-input").value = "";
    tokenError.hidden = true;
    showTokenState();
    load(true);
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
      showResult(false, "Retry selected failed videos", "No failed video is selected.", "");
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

  // `video`: a video the answer made, linked to its page (built as DOM, never as markup).
  function showResult(ok, title, text, raw, video) {
    result.hidden = false;
    result.className = ok ? "result ok" : "result failed";
    document.getElementById("result-title").textContent = title;
    document.getElementById("result-text").textContent = text;
    document.getElementById("result-body").textContent = raw;
    document.getElementById("result-raw").hidden = !raw;
    var link = document.getElementById("result-link");
    document.getElementById("result-link-line").hidden = !video;
    if (video) {
      link.href = "/ui/videos/" + encodeURIComponent(video);
      link.textContent = "Open video " + video;
    }
  }

  // The video a sandbox answer made, if this call made one.
  function madeVideo(call, status, body) {
    if (call.url !== "/sandbox/videos" || status !== 201) return null;
    try {
      var id = JSON.parse(body).video_id;
      return typeof id === "string" ? id : null;
    } catch (e) {
      return null;
    }
  }

  function pretty(body) {
    try { return JSON.stringify(JSON.parse(body), null, 2); } catch (e) { return body; }
  }

  // The API's answer as a sentence; the JSON stays one click away.
  function sentence(status, body) {
    var j = null;
    try { j = JSON.parse(body); } catch (e) { /* not JSON */ }
    if (status === 401) return "The server refused the admin token: enter it again.";
    if (j && j.error) {
      var why = j.error.message || j.error.code;
      if (status === 409) return "Refused: the video's state does not accept this now (" + why + ").";
      return "Not done (" + status + "): " + why;
    }
    if (j && j.video_id && j.reaches) {
      return "Made demo video " + j.video_id + ", now " + j.status + "; it will reach " + j.reaches + ": " + j.how + ".";
    }
    if (j && j.video_id && j.next) {
      return "Made demo video " + j.video_id + ", now " + j.status + "; on its page, request its music.";
    }
    if (j && j.status === "applied") {
      return "Done: the video is now " + j.video_status + (j.job_id ? ", with job " + j.job_id : "") + ".";
    }
    if (j && j.status === "queued") return "Queued: the engine takes it up within seconds.";
    if (j && j.status === "requeued") return "The effect is back in the queue and runs again shortly.";
    if (j && j.status && j.video_status) {
      return "Taken as " + j.status + "; the video is " + j.video_status + ".";
    }
    if (status >= 200 && status < 300) return "Accepted.";
    return "The server answered " + status + ".";
  }

  // One after the other, so that each answer is shown against its call.
  function runBulk(call) {
    var lines = [];
    var raw = [];
    var done = 0;
    var headers = authHeaders();
    headers["Content-Type"] = "application/json";
    var chain = Promise.resolve();
    call.urls.forEach(function (url) {
      chain = chain.then(function () {
        return fetch(url, { method: call.method, headers: headers, body: "{}" })
          .then(function (r) {
            return r.text().then(function (body) {
              if (r.ok) done += 1;
              lines.push(url.split("/")[2] + ": " + sentence(r.status, body));
              raw.push(call.method + " " + url + " → " + r.status + " " + r.statusText + "\n" + pretty(body));
            });
          })
          .catch(function (e) {
            lines.push(url.split("/")[2] + ": the call failed (" + String(e) + ")");
            raw.push(call.method + " " + url + " failed: " + String(e));
          });
      });
    });
    return chain.then(function () {
      var n = call.urls.length;
      showResult(done === n, "Retried " + n + " video" + (n === 1 ? "" : "s"),
        done + " of " + n + " accepted.\n" + lines.join("\n"), raw.join("\n\n"));
      return load(true);
    });
  }

  // Every action asks first, then says what the API answered.
  view.addEventListener("click", function (ev) {
    if (ev.target.closest("button[data-bulk-retry]")) {
      bulkRetry();
      return;
    }
    var b = ev.target.closest("button[data-action]");
    if (!b) return;
    var body = b.getAttribute("data-body");
    var promptFrom = b.getAttribute("data-prompt");
    if (promptFrom) {
      var field = document.getElementById(promptFrom);
      var prompt = field ? field.value.trim() : "";
      body = prompt ? JSON.stringify({ prompt: prompt }) : null;
    }
    pending = { method: b.getAttribute("data-method"), url: b.getAttribute("data-action"), body: body };
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
    var title = call.method + " " + call.url;
    fetch(call.url, { method: call.method, headers: headers, body: call.body || "{}" })
      .then(function (r) {
        return r.text().then(function (body) {
          showResult(r.ok, title + " → " + r.status + " " + r.statusText, sentence(r.status, body), pretty(body),
            madeVideo(call, r.status, body));
          if (r.status === 401) askToken("The server refused this token (401 Unauthorized). Check the value of REELSTATE_ADMIN_TOKEN and enter it again.");
          return load(true);
        });
      })
      .catch(function (e) {
        showResult(false, title + " failed", "The call did not reach the server: " + String(e), "");
      });
  });
  document.getElementById("result-close").addEventListener("click", function () {
    result.hidden = true;
  });

  showTokenState();
  showStamp();
  load(true).then(schedule, schedule);
})();
