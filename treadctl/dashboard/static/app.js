// treadctl dashboard: plain JS, no build step. Live lanes over Server-Sent Events,
// commands as fetch() POSTs carrying the session's CSRF token.
"use strict";

const S = { me: null, lanes: new Map(), cards: new Map(), programs: [], sites: [],
            bridges: {}, dialogLane: null };

const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmt(v, digits = 1, unit = "") {
  return (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(digits) + unit;
}
function clock(s) {
  if (s === null || s === undefined) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function toast(text, kind = "info") {
  const t = el("div", "toast " + kind, text);
  $("#toasts").prepend(t);
  setTimeout(() => t.remove(), kind === "error" ? 12000 : 6000);
  while ($("#toasts").children.length > 3) $("#toasts").lastChild.remove();
}

async function post(url, body, isForm = false) {
  const opts = { method: "POST", headers: { "X-CSRF-Token": S.me.csrf }, credentials: "same-origin" };
  if (isForm) opts.body = body;
  else { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body || {}); }
  const r = await fetch(url, opts);
  let data;
  const text = await r.text();
  try { data = JSON.parse(text); } catch (e) { data = { type: "error", error: text || r.statusText }; }
  if (r.status === 401) { location.href = "/login"; }
  data.httpStatus = r.status;
  return data;
}

function laneUrl(key, cmd) {
  const [site, lane] = key.split("/");
  return `/api/lanes/${encodeURIComponent(site)}/${encodeURIComponent(lane)}/${cmd}`;
}

function say(reply, what) {
  if (reply.type === "ack") toast(`${what}: done`, "ok");
  else if (reply.type === "sent") toast(`${what}: sent`, "ok");
  else toast(`${what}: ${reply.error || "refused"}`, "error");
}

// ------------------------------------------------------------------ the grid
function siteSection(name) {
  let sec = document.getElementById("site-" + name);
  if (!sec) {
    sec = el("section", "site");
    sec.id = "site-" + name;
    const h = el("h2", "site-name");
    h.append(el("span", "", name), el("span", "bridge", ""));
    if (S.sites.length > 1 && S.me.may.estop) {
      const b = el("button", "estop-site", `E-stop ${name}`);
      b.addEventListener("click", async () => say(await post(`/api/estop-all?site=${encodeURIComponent(name)}`), `e-stop ${name}`));
      h.append(b);
    }
    if (S.sites.length <= 1) h.hidden = true;
    sec.append(h, el("div", "grid"));
    $("#sites").append(sec);
  }
  return sec;
}

function makeCard(lane) {
  const c = el("article", "lane");
  c.dataset.lane = lane.key;
  const head = el("div", "lane-head");
  head.append(el("span", "lane-id", lane.id), el("span", "status"), el("span", "state"));
  const dir = el("div", "direction");
  const nums = el("div", "numbers");
  for (const [k, label] of [["speed", "km/h"], ["incline", "% incline"], ["hr", "bpm"]]) {
    const box = el("div", "num " + k);
    box.append(el("span", "value", "–"), el("span", "unit", label));
    nums.append(box);
  }
  const prog = el("div", "program");
  const left = el("div", "time-left");
  const warn = el("ul", "warnings");
  const caps = el("div", "caps");
  const link = el("div", "link");
  const btns = el("div", "buttons");
  const mk = (cls, text, fn, show = true) => {
    const b = el("button", cls, text);
    b.addEventListener("click", fn);
    if (!show) b.hidden = true;
    btns.append(b);
    return b;
  };
  mk("estop", "E-STOP", async () => say(await post(laneUrl(lane.key, "estop")), `${lane.id} e-stop`));
  mk("stop", "Stop", async () => say(await post(laneUrl(lane.key, "stop")), `${lane.id} stop`));
  mk("stop-why", "Stop…", () => openStop(lane.key));
  mk("start", "Start…", () => openStart(lane.key), S.me.may.start);
  mk("pause", "Pause", async () => say(await post(laneUrl(lane.key, "pause")), `${lane.id} pause`), S.me.may.pause);
  mk("resume", "Resume", async () => say(await post(laneUrl(lane.key, "resume")), `${lane.id} resume`), S.me.may.resume);
  mk("reset", "Reset…", () => openReset(lane.key), S.me.may.reset);
  mk("history", "History", () => openHistory(lane.key));
  c.append(head, dir, nums, prog, left, warn, caps, link, btns);
  siteSection(lane.site).querySelector(".grid").append(c);
  return c;
}

// Writes only what changed: a DOM write, even of the same text, invalidates the card's style
// and layout, and 200 live cards rewritten ten times a second kept the page's main thread
// busy long enough to hold up an E-STOP click (docs/fleet.md, "Measured").
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
function setFlag(node, prop, value) {
  if (node[prop] !== value) node[prop] = value;
}
function cardParts(c) {
  if (!c._parts) {
    c._parts = {
      status: $(".status", c), state: $(".state", c), direction: $(".direction", c),
      speed: $(".speed .value", c), incline: $(".incline .value", c), hr: $(".hr .value", c),
      program: $(".program", c), left: $(".time-left", c), warnings: $(".warnings", c),
      caps: $(".caps", c), link: $(".link", c), pause: $(".pause", c), resume: $(".resume", c),
      reset: $(".reset", c), start: $(".start", c),
    };
  }
  return c._parts;
}

function render(lane) {
  S.lanes.set(lane.key, lane);
  let c = S.cards.get(lane.key);
  if (!c) { c = makeCard(lane); S.cards.set(lane.key, c); }
  const p = cardParts(c);
  if (c.dataset.state !== lane.state) c.dataset.state = lane.state;
  const offline = lane.status !== "online";
  c.classList.toggle("offline", offline);  // a toggle to the current state writes nothing
  setText(p.status, offline ? lane.status : "");
  setText(p.state, lane.state);
  const rev = lane.direction === "reverse";
  setText(p.direction, rev ? "◀ REVERSE" : "▶ FORWARD");
  const still = !(lane.speed_kmh > 0.05);
  p.direction.classList.toggle("reverse", rev);
  p.direction.classList.toggle("still", still);
  setText(p.speed, fmt(lane.speed_kmh));
  setText(p.incline, fmt(lane.incline_pct));
  setText(p.hr, lane.hr_bpm ? String(lane.hr_bpm) : "–");
  let prog = lane.program ? lane.program : "no program";
  if (lane.program && lane.segment) prog += ` · segment ${lane.segment}${lane.segments ? "/" + lane.segments : ""}`;
  setText(p.program, prog);
  setText(p.left, lane.time_left_s !== null && lane.time_left_s !== undefined
    ? `${clock(lane.time_left_s)} left` : (lane.elapsed_s ? `${clock(lane.elapsed_s)} elapsed` : ""));
  const warnings = lane.warnings.join("\n");
  if (p.warnings.dataset.shown !== warnings) {
    p.warnings.dataset.shown = warnings;
    p.warnings.replaceChildren(...lane.warnings.map((t) => el("li", "", t)));
  }
  const l = lane.link || {};
  setText(p.caps, capsText(lane));
  setText(p.link, l.frames_received !== undefined
    ? `link rx ${l.frames_received} tx ${l.frames_sent} crc ${l.crc_errors || 0} dropped ${l.dropped || 0}` : "link –");
  const running = ["running", "starting"].includes(lane.state);
  setFlag(p.pause, "disabled", !running);
  setFlag(p.resume, "disabled", lane.state !== "paused");
  setFlag(p.reset, "disabled", !(lane.latched || lane.state === "fault"));
  setFlag(p.start, "disabled", lane.state !== "idle" || lane.status !== "online");
}

// What the lane can do, from the daemon's retained info (or the dashboard's config).
function capsText(lane) {
  if (!lane.profile) return "profile unknown · reverse refused";
  const proto = lane.protocol ? (lane.protocol === "ftms" ? "FTMS" : lane.protocol) : "";
  const moves = lane.rear_facing ? "forward only · rear-facing"
    : (lane.reverse ? "forward and reverse" : "forward only");
  return [lane.profile, proto, moves].filter(Boolean).join(" · ");
}

function renderSites() {
  for (const s of S.sites) {
    const sec = siteSection(s.name);
    const b = $(".bridge", sec);
    const up = S.bridges[s.name];
    b.textContent = up === false ? "link to site DOWN" : (up === true ? "linked" : "");
    sec.classList.toggle("bridge-down", up === false);
  }
}

function snapshot(data) {
  S.sites = data.sites;
  for (const s of data.sites) S.bridges[s.name] = s.bridge_up;
  renderSites();
  for (const lane of data.lanes) render(lane);
  setConn(data.broker);
}

function setConn(up) {
  const c = $("#conn");
  c.textContent = up ? "live" : "broker not connected";
  c.className = "conn " + (up ? "up" : "down");
}

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("snapshot", (e) => snapshot(JSON.parse(e.data)));
  es.addEventListener("lanes", (e) => { for (const lane of JSON.parse(e.data)) render(lane); });
  es.addEventListener("sites", (e) => {
    for (const s of JSON.parse(e.data)) S.bridges[s.name] = s.bridge_up;
    renderSites();
  });
  es.addEventListener("broker", (e) => setConn(JSON.parse(e.data).up));
  es.addEventListener("event", (e) => {
    const { lane, event } = JSON.parse(e.data);
    const id = S.sites.length > 1 ? lane : lane.split("/")[1];
    if (event.type === "error") toast(`${id}: ${event.command}: ${event.error}`, "error");
    else if (event.type === "estop") toast(`${id}: E-STOP: ${event.reason || event.interlock || ""}`, "error");
    else if (event.type === "finished") toast(`${id}: session ${event.outcome}`, "info");
    else if (event.type === "fault") toast(`${id}: fault: ${event.reason || ""}`, "error");
    else if (event.type === "turn-around") toast(`${id}: turn-around: ${event.message || event.face}; press Resume when done`, "info");
  });
  es.onerror = () => setConn(false);
}

// ------------------------------------------------------------------ dialogs
// Non-modal on purpose: a modal <dialog> sits in the top layer and would cover (and
// disable) the gym-wide E-STOP button, which must stay on screen and clickable always.
function openDialog(sel) {
  for (const d of document.querySelectorAll("dialog[open]")) d.close();
  $("#veil").hidden = false;
  $(sel).show();
}
function showResult(box, reply) {
  box.replaceChildren();
  if (reply.type === "invalid" || (reply.lines && reply.lines.length)) {
    box.append(el("p", "error", "Not started: nothing moved. Problems:"));
    const ul = el("ul", "violations");
    reply.violations.forEach((v, i) => {
      const li = el("li", "violation");
      li.dataset.segment = v.segment === null ? "" : String(v.segment);
      li.dataset.field = v.field;
      li.textContent = reply.lines[i];
      ul.append(li);
    });
    box.append(ul);
  } else if (reply.type === "checked") {
    box.append(el("p", "ok", `${reply.program}: OK on this lane`));
  } else if (reply.type === "ack") {
    box.append(el("p", "ok", `Started ${reply.program} (session ${reply.session_id})`));
  } else {
    box.append(el("p", "error", reply.error || "refused"));
  }
  for (const w of reply.warnings || []) box.append(el("p", "hint", w));
}

function openStart(key) {
  const lane = S.lanes.get(key);
  S.dialogLane = key;
  $("#start-lane").textContent = lane.id;
  $("#start-caps").textContent = !lane.profile
    ? "Firmware profile unknown to the dashboard: reverse programs are refused"
    : (lane.rear_facing ? `${capsText(lane)}: reverse segments run with the user facing the rear; each turn-around waits for Resume`
      : (lane.reverse ? `${capsText(lane)}` : `${capsText(lane)}: reverse programs are refused`));
  const sel = $("#start-builtin");
  sel.replaceChildren();
  for (const p of S.programs) {
    const o = el("option", "", `${p.name} (${clock(p.duration_s)}${p.reverse ? ", reverse" : ""})`);
    o.value = p.name;
    if (p.reverse && !lane.reverse) { o.disabled = true; o.textContent += " – not on this lane"; }
    sel.append(o);
  }
  const first = [...sel.options].find((o) => !o.disabled);
  if (first) sel.value = first.value;
  $("#start-result").replaceChildren();
  $("#start-file").value = "";
  openDialog("#start-dialog");
}

async function startBuiltin() {
  const r = await post(laneUrl(S.dialogLane, "start"), { program: $("#start-builtin").value });
  showResult($("#start-result"), r);
  if (r.type === "ack") setTimeout(() => $("#start-dialog").close(), 800);
}

async function startFile(check) {
  const f = $("#start-file").files[0];
  if (!f) { showResult($("#start-result"), { type: "error", error: "choose a file first" }); return; }
  const fd = new FormData();
  fd.append("file", f, f.name);
  const r = await post(laneUrl(S.dialogLane, "start") + (check ? "?check=1" : ""), fd, true);
  showResult($("#start-result"), r);
  if (r.type === "ack") setTimeout(() => $("#start-dialog").close(), 800);
}

function openStop(key) {
  S.dialogLane = key;
  $("#stop-lane").textContent = S.lanes.get(key).id;
  $("#stop-reason").value = "";
  $("#stop-error").textContent = "";
  openDialog("#stop-dialog");
  $("#stop-reason").focus();
}

async function doStop() {
  const key = S.dialogLane;
  const r = await post(laneUrl(key, "stop"), { reason: $("#stop-reason").value.trim() });
  if (r.type === "ack") { $("#stop-dialog").close(); toast(`${key.split("/")[1]} stop: done`, "ok"); }
  else $("#stop-error").textContent = r.error || "refused";
}

function openReset(key) {
  S.dialogLane = key;
  $("#reset-lane").textContent = S.lanes.get(key).id;
  $("#reset-reason").value = "";
  $("#reset-confirm").checked = false;
  $("#reset-error").textContent = "";
  openDialog("#reset-dialog");
}

async function doReset() {
  const reason = $("#reset-reason").value.trim();
  if (!reason) { $("#reset-error").textContent = "A reset needs a reason."; return; }
  if (!$("#reset-confirm").checked) { $("#reset-error").textContent = "Confirm that you checked the machine and its user."; return; }
  const r = await post(laneUrl(S.dialogLane, "reset"), { reason, confirm: true });
  if (r.type === "ack") { $("#reset-dialog").close(); toast(`${S.dialogLane.split("/")[1]}: reset`, "ok"); }
  else $("#reset-error").textContent = r.error || "refused";
}

async function openHistory(key) {
  const [site, lane] = key.split("/");
  $("#history-lane").textContent = lane;
  $("#history-plot").hidden = true;
  const tb = $("#history-table tbody");
  tb.replaceChildren();
  openDialog("#history-dialog");
  const r = await fetch(`/api/lanes/${encodeURIComponent(site)}/${encodeURIComponent(lane)}/sessions`);
  const data = await r.json();
  $("#history-source").textContent = data.source === "store"
    ? "From the daemon's session store (read only)."
    : "Summaries seen since the dashboard started; plots and downloads are on the daemon's machine.";
  for (const s of data.sessions) {
    const tr = el("tr");
    tr.dataset.session = s.session_id;
    tr.append(el("td", "", (s.started_at || "").replace("T", " ").slice(0, 19)),
              el("td", "", s.program || ""), el("td", "", s.outcome || ""),
              el("td", "", s.distance_m !== null && s.distance_m !== undefined ? `${Math.round(s.distance_m)} m` : ""));
    const td = el("td", "actions");
    if (s.downloads) {
      const show = el("button", "plot", "Plot");
      show.type = "button";
      show.addEventListener("click", () => {
        const img = $("#history-plot");
        img.src = `/api/sessions/${encodeURIComponent(s.session_id)}/plot.png?t=${Date.now()}`;
        img.hidden = false;
      });
      td.append(show);
      for (const f of ["csv", "tcx", "fit"]) {
        const a = el("a", "dl", f.toUpperCase());
        a.href = `/api/sessions/${encodeURIComponent(s.session_id)}/export.${f}`;
        td.append(a);
      }
    }
    tr.append(td);
    tb.append(tr);
  }
  if (!data.sessions.length) {
    const tr = el("tr"), td = el("td", "", "No sessions yet.");
    td.colSpan = 5;
    tr.append(td);
    tb.append(tr);
  }
}

// ------------------------------------------------------------------ start-up
async function main() {
  const r = await fetch("/api/me");
  if (r.status === 401) { location.href = "/login"; return; }
  S.me = await r.json();
  $("#who").textContent = `${S.me.user} (${S.me.role})`;
  document.body.dataset.role = S.me.role;
  S.programs = await (await fetch("/api/programs")).json();
  $("#estop-all").addEventListener("click", async () => {
    say(await post("/api/estop-all"), "E-STOP ALL");
  });
  $("#logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": S.me.csrf } });
    location.href = "/login";
  });
  for (const d of document.querySelectorAll("dialog")) {
    d.addEventListener("close", () => { $("#veil").hidden = true; });
  }
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") for (const d of document.querySelectorAll("dialog[open]")) d.close();
  });
  $("#start-builtin-go").addEventListener("click", startBuiltin);
  $("#start-file-check").addEventListener("click", () => startFile(true));
  $("#start-file-go").addEventListener("click", () => startFile(false));
  $("#start-close").addEventListener("click", () => $("#start-dialog").close());
  $("#reset-cancel").addEventListener("click", () => $("#reset-dialog").close());
  $("#reset-go").addEventListener("click", doReset);
  $("#stop-cancel").addEventListener("click", () => $("#stop-dialog").close());
  $("#stop-go").addEventListener("click", doStop);
  $("#history-close").addEventListener("click", () => $("#history-dialog").close());
  connect();
}

document.addEventListener("DOMContentLoaded", main);
