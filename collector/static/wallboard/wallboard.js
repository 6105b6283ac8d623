// connect-collector wallboard: /wallboard/data for the first view, then server-sent
// events (/wallboard/events) as snapshots land. No library, nothing from another host.
// URL parameters: ?oldest_alert=SECONDS (oldest contact age shown red above it, default 60),
// ?sl_target=PERCENT (service level shown red below it, default 80), ?instance=ID-OR-NAME and
// ?queue=TEXT (only that instance's rows, only the queues whose name contains TEXT).
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.search);
  var OLDEST_ALERT = Number(params.get("oldest_alert") || 60);
  var SL_TARGET = Number(params.get("sl_target") || 80);
  var STALE_AFTER = 60; // seconds: a snapshot older than this is flagged
  var ONLY_INSTANCE = params.get("instance");
  var ONLY_QUEUE = (params.get("queue") || "").toLowerCase();

  function shown(row, isQueue) {
    if (ONLY_INSTANCE && row.instance_id !== ONLY_INSTANCE && row.instance_name !== ONLY_INSTANCE) { return false; }
    return !(isQueue && ONLY_QUEUE && (row.queue_name || row.queue_id || "").toLowerCase().indexOf(ONLY_QUEUE) < 0);
  }
  var data = null;
  var offset = 0; // server clock - browser clock, ms
  var source = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function num(v) {
    if (v === null || v === undefined) { return "\u2013"; }
    return Math.round(v).toLocaleString();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) { return "\u2013"; }
    var s = Math.max(0, Math.floor(seconds));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var mm = (h > 0 && m < 10 ? "0" : "") + m, ss = (r < 10 ? "0" : "") + r;
    return (h > 0 ? h + ":" : "") + mm + ":" + ss;
  }

  function nowMs() { return Date.now() + offset; }

  function timeOf(iso) {
    if (!iso) { return "-"; }
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function figure(cls, value, label) {
    var f = el("div", "figure " + cls);
    f.appendChild(el("div", "value", value));
    f.appendChild(el("div", "label", label));
    return f;
  }

  function queueKey(q) {
    return [q.instance_id, q.queue_id, q.channel, q.routing_profile_id, q.profile].join("/");
  }

  function queueCard(q) {
    var card = el("div", "queue");
    card.dataset.key = queueKey(q);
    card.dataset.queueId = q.queue_id || "";
    card.dataset.channel = q.channel || "";
    card.dataset.snapshotAt = q.snapshot_at || "";
    var alert = q.oldest_contact_age !== null && q.oldest_contact_age > OLDEST_ALERT;
    if (alert) { card.classList.add("alert"); }
    card.appendChild(el("div", "name", q.queue_name || q.queue_id || q.routing_profile_name || "(all queues)"));
    var sub = [q.channel, q.routing_profile_name, q.instance_name].filter(Boolean).join(" \u00b7 ");
    card.appendChild(el("div", "sub", sub));
    var big = el("div", "big");
    big.appendChild(figure("in-queue", num(q.contacts_in_queue), "in queue"));
    var waiting = q.contacts_in_queue === 0 ? null : q.oldest_contact_age; // nobody waits: no age
    var oldest = figure("oldest" + (alert ? " alert" : ""), duration(waiting), "oldest contact");
    oldest.title = "above " + OLDEST_ALERT + " s is shown red";
    big.appendChild(oldest);
    card.appendChild(big);
    var agents = el("div", "agents-row");
    agents.appendChild(figure("small available", num(q.agents_available), "available"));
    agents.appendChild(figure("small on-contact", num(q.agents_on_contact), "on contact"));
    agents.appendChild(figure("small acw", num(q.agents_after_contact_work), "ACW"));
    card.appendChild(agents);
    var t = q.today;
    var today = el("div", "today-row");
    var pct = t && t.service_level_pct !== null ? t.service_level_pct : null;
    var slCls = "small sl" + (pct === null ? "" : pct < SL_TARGET ? " bad" : " good");
    var slLabel = "service level" + (t && t.service_level_threshold ? " " + t.service_level_threshold + " s" : "") + " today";
    today.appendChild(figure(slCls, pct === null ? "\u2013" : pct.toFixed(1) + "%", slLabel));
    today.appendChild(figure("small handled", t ? num(t.contacts_handled) : "\u2013", "handled today"));
    card.appendChild(today);
    var src = t
      ? "today from profile " + t.profile + " (" + t.time_zone + ", " + t.date + ", "
        + (t.scope === "channel" ? "this channel" : "all channels") + ") through " + timeOf(t.through)
      : "no historical data today for this queue";
    card.appendChild(el("div", "source", src + " \u00b7 live profile " + q.profile));
    return card;
  }

  function contactState(a) {
    var states = a.contact_states;
    var names = [];
    if (Array.isArray(states)) {
      states.forEach(function (s) { names.push(typeof s === "string" ? s : (s && (s.state || s.AgentContactState)) || ""); });
    } else if (states && typeof states === "object") {
      Object.keys(states).forEach(function (k) { if (states[k]) { names.push(k); } });
    }
    if (names.indexOf("ENDED") >= 0) { return "acw"; }
    if (names.some(function (n) { return /^CONNECTED/.test(n); })) { return "on-contact"; }
    return null;
  }

  function stateClass(a) {
    var byContact = contactState(a);
    if (byContact) { return byContact; }
    var s = (a.status || "").toLowerCase();
    if (a.contacts > 0) { return "on-contact"; }
    if (s === "available") { return "available"; }
    if (s === "offline") { return "offline"; }
    return "";
  }

  function agentRow(a) {
    var tr = el("tr");
    tr.dataset.agentId = a.agent_id;
    tr.appendChild(el("td", "agent-name", a.agent_name || a.agent_id));
    var st = el("td");
    var cls = stateClass(a);
    var label = a.status || "-";
    if (cls === "acw" && !/after/i.test(label)) { label += " \u00b7 ACW"; }
    if (cls === "on-contact" && a.status && a.status.toLowerCase() === "available") { label += " \u00b7 on contact"; }
    st.appendChild(el("span", "state " + cls, label));
    tr.appendChild(st);
    var since = el("td", "num in-state");
    since.dataset.since = a.status_since || "";
    tr.appendChild(since);
    tr.appendChild(el("td", "num", num(a.contacts)));
    tr.appendChild(el("td", "", a.routing_profile_name || ""));
    tr.appendChild(el("td", "", a.next_status || ""));
    tr.appendChild(el("td", "dim", a.instance_name || a.instance_id));
    return tr;
  }

  function render(all) {
    var d = Object.assign({}, all, {
      queues: all.queues.filter(function (q) { return shown(q, true); }),
      agents: all.agents.filter(function (a) { return shown(a, false); })
    });
    if (ONLY_INSTANCE) { d.agents_total = d.agents.length; }
    data = d;
    var serverNow = d.server_time || d.now; // the instant the server sent it
    if (serverNow) { offset = Date.parse(serverNow) - Date.now(); }
    var qs = $("queues");
    qs.replaceChildren.apply(qs, d.queues.map(queueCard));
    $("no-queues").hidden = d.queues.length > 0;
    $("queue-count").textContent = d.queues.length ? "(" + d.queues.length + ")" : "";
    var tbody = $("agents").tBodies[0];
    tbody.replaceChildren.apply(tbody, d.agents.map(agentRow));
    $("no-agents").hidden = d.agents.length > 0;
    $("agents").hidden = d.agents.length === 0;
    $("agent-count").textContent = d.agents_total
      ? "(" + (d.agents_total > d.agents.length ? d.agents.length + " of " : "") + d.agents_total + ")" : "";
    var srcs = d.today_sources || [];
    $("sources").textContent = srcs.length
      ? "Today's service level and handled come from the historical profile"
        + (srcs.length > 1 ? "s " : " ")
        + srcs.map(function (s) { return s.profile + " (day " + s.date + " in " + s.time_zone + ")"; }).join(", ")
        + ": per queue, the one whose data reaches furthest into today."
      : "No historical data for today yet: service level and handled appear once a historical profile has collected today's first interval.";
    document.body.dataset.snapshotId = d.id || "";
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
    tick();
  }

  function newestSnapshot(d) {
    var newest = null;
    d.queues.concat(d.agents).forEach(function (r) {
      if (r.snapshot_at && (newest === null || r.snapshot_at > newest)) { newest = r.snapshot_at; }
    });
    return newest;
  }

  function tick() {
    $("clock").textContent = new Date(nowMs()).toLocaleTimeString();
    if (!data) { return; }
    var snap = newestSnapshot(data);
    $("as-of").textContent = timeOf(snap);
    var age = snap ? (nowMs() - Date.parse(snap)) / 1000 : null;
    $("age").textContent = age === null ? "" : "(" + duration(age) + " ago)";
    $("age").classList.toggle("stale", age !== null && age > STALE_AFTER);
    var cells = document.querySelectorAll("td.in-state");
    for (var i = 0; i < cells.length; i++) {
      var since = cells[i].dataset.since;
      cells[i].textContent = since ? duration((nowMs() - Date.parse(since)) / 1000) : "\u2013";
    }
  }

  function status(cls, text) {
    var s = $("status");
    s.className = "status " + cls;
    s.textContent = text;
  }

  function banner(text) {
    var b = $("banner");
    b.hidden = !text;
    b.textContent = text || "";
  }

  function connect(since) {
    if (source) { source.close(); }
    source = new EventSource("/wallboard/events" + (since ? "?since=" + encodeURIComponent(since) : ""));
    source.onopen = function () { status("live", "live"); };
    source.onerror = function () { status("connecting", "reconnecting"); };
    source.addEventListener("snapshot", function (e) {
      status("live", "live");
      banner(null);
      render(JSON.parse(e.data));
    });
    source.addEventListener("unavailable", function (e) {
      var why = JSON.parse(e.data).reason;
      status("down", "database away");
      banner("The database does not answer (" + why + "); the figures below are the last ones received.");
    });
  }

  function load() {
    fetch("/wallboard/data", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status)); })
      .then(function (d) { render(d); connect(d.id); })
      .catch(function (e) { status("down", "unavailable"); banner("No data yet: " + e.message); connect(null); });
  }

  setInterval(tick, 1000);
  load();
})();
