// camera-agent console, served as /console/console.js (no inline script: strict CSP).
// Reads /api/v1/status and /api/v1/cameras every 5 s and keeps one card per camera: live
// view (WHEP: POST /api/v1/webrtc/{id}, raw SDP offer -> 201 answer), PTZ pad, image
// settings, snapshot, run/pause, relay state; and an events panel of observed changes.
"use strict";

const KEY = "camera-agent-token";
const PERIOD = 5000, THUMB_PERIOD = 30000, THUMB_PARALLEL = 2, STATS_PERIOD = 1000;
const ICE_WAIT = 2000, IMAGE_DEBOUNCE = 400, MAX_EVENTS = 200;
// Continuous PTZ: speed 0..100; the camera stops by itself 5 s after the last call, so a held
// button repeats the call every PTZ_REPEAT ms.
const PTZ_SPEED = 50, PTZ_REPEAT = 2000;
const IMAGE_SETTINGS = [  // [label, key in GET .../image, PUT path segment]
  ["brightness", "brightness", "brightness"],
  ["contrast", "contrast", "contrast"],
  ["saturation", "color_saturation", "saturation"],
  ["sharpness", "sharpness", "sharpness"],
];
const MOVES = [["up", "\u25b2"], ["left", "\u25c0"], ["right", "\u25b6"], ["down", "\u25bc"]];

let token = sessionStorage.getItem(KEY) || "";
let asked = false;
const cards = new Map();  // camera id -> card
const queue = [];
let running = 0;
const $ = (id) => document.getElementById(id);

class HttpError extends Error {
  constructor(path, status, detail) {
    super(path + ": HTTP " + status + (detail ? " (" + detail + ")" : ""));
    this.status = status;
  }
}

// One API call with the bearer token (asked for once on a 401); the Response when ok.
async function request(path, init) {
  for (;;) {
    const opts = Object.assign({cache: "no-store"}, init || {});
    const headers = Object.assign({}, opts.headers || {});
    if (token) headers.Authorization = "Bearer " + token;
    opts.headers = headers;
    const r = await fetch(path, opts);
    if (r.status === 401 && !asked) {
      asked = true;
      const given = window.prompt("API token");
      if (given && given.trim()) {
        token = given.trim();
        sessionStorage.setItem(KEY, token);
        continue;
      }
    }
    if (!r.ok) {
      let detail = "";
      try { detail = (await r.json()).detail || ""; } catch (e) { /* not JSON */ }
      throw new HttpError(path, r.status, typeof detail === "string" ? detail : "");
    }
    return r;
  }
}

const getJson = async (path) => (await request(path)).json();
const send = (method, path, body) => request(path, {
  method: method,
  headers: body === undefined ? {} : {"Content-Type": "application/json"},
  body: body === undefined ? undefined : JSON.stringify(body),
});

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function button(text, cls, title) {
  const b = el("button", text, cls);
  b.type = "button";
  if (title) { b.title = title; b.setAttribute("aria-label", title); }
  return b;
}

function fill(dl, rows) {
  dl.replaceChildren();
  for (const [k, v, cls] of rows) {
    dl.append(el("dt", k), el("dd", v === undefined || v === null || v === "" ? "-" : v, cls));
  }
}

function duration(s) {
  s = Math.floor(Number(s) || 0);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}

function bytes(n) {
  n = Number(n) || 0;
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function bitrate(b) {
  if (typeof b !== "number" || !isFinite(b) || b < 0) return "-";
  if (b >= 1e6) return (b / 1e6).toFixed(2) + " Mbit/s";
  return (b / 1e3).toFixed(0) + " kbit/s";
}

function message(e) { return e && e.message ? e.message : String(e); }

// ---- events -------------------------------------------------------------------------------

// The hook for event objects {camera_id, type, state, time} (time: epoch seconds or ms, or an
// ISO string); the page feeds it the changes it observes, a later event stream can too.
function addEvents(events) {
  const list = $("events");
  for (const ev of events) {
    if (!ev || typeof ev !== "object") continue;
    let t = ev.time;
    if (typeof t === "number" && t < 1e12) t *= 1000;
    const when = new Date(t === undefined ? Date.now() : t);
    const card = cards.get(ev.camera_id);
    const who = card ? card.label : (ev.camera_id || "agent");
    const li = el("li", (isNaN(when) ? "-" : when.toLocaleTimeString()) + " " + who + ": " +
      String(ev.type || "event") + " \u2192 " + String(ev.state === undefined ? "" : ev.state));
    li.dataset.camera = ev.camera_id || "";
    li.dataset.type = String(ev.type || "");
    list.prepend(li);
  }
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function observe(card, type, state) {
  const before = card.seen[type];
  card.seen[type] = state;
  if (before !== undefined && before !== state) {
    addEvents([{camera_id: card.id, type: type, state: state, time: Date.now()}]);
  }
}

// ---- status -------------------------------------------------------------------------------

function link(x) {
  if (!x) return ["not configured", "muted"];
  return [String(x.state || "unknown") + (x.last_error ? " (" + x.last_error + ")" : ""),
          x.alive || x.state === "ready" ? "ok" : "bad"];
}

function renderStatus(st) {
  $("version").textContent = st.version || "";
  $("uptime").textContent = duration(st.uptime_s);
  const a = st.activation || {};
  const streams = (a.streams || []).map((s) => s.stream_name + " \u2192 " + (s.camera_id || "-"));
  fill($("activation"), [
    ["state", a.state, a.activated ? "ok" : ""],
    ["agent id", a.agent_id],
    ["streams", streams.join(", ")],
    ["last error", a.last_error, a.last_error ? "bad" : ""],
  ]);
  const ep = link(st.endpoint), sp = link(st.streampoint);
  const relay = st.relay || {};
  const t = relay.tunnels;
  const tunnels = t ? t.open + " open, " + t.opened + " opened, " + t.refused + " refused, " +
    t.failed + " failed, " + bytes(t.bytes_in) + " in / " + bytes(t.bytes_out) + " out" : null;
  const rs = relay.restream;
  const restream = rs ? "port " + rs.port + ", " + (rs.sources || []).length + " source(s)" : null;
  const push = Array.isArray(relay.push) ? relay.push.map((p) => p.state).join(", ") : null;
  const cams = st.cameras || {};
  const byState = Object.entries(cams.by_state || {}).map(([k, v]) => v + " " + k).join(", ");
  fill($("links"), [
    ["endpoint", ep[0], ep[1]],
    ["streampoint", sp[0], sp[1]],
    ["tunnels", tunnels],
    ["restream", restream],
    ["push", push],
    ["cameras", (cams.total || 0) + (byState ? " (" + byState + ")" : "")],
  ]);
}

// What the status says of one camera: push relays, restream sources, and its shared sessions
// when the status has them (`relay.sessions` or `sessions`: {cameras: {id: ...}}, an object
// keyed by camera id, or a list of entries with camera_id).
function relayOf(st, id) {
  const relay = (st && st.relay) || {};
  const push = (Array.isArray(relay.push) ? relay.push : []).filter((p) => p.camera_id === id);
  const rs = relay.restream && Array.isArray(relay.restream.sources) ? relay.restream.sources : [];
  const sources = rs.filter((s) => s.camera === id || s.camera_id === id);
  let sessions = null;
  const s = relay.sessions !== undefined ? relay.sessions : (st ? st.sessions : undefined);
  if (Array.isArray(s)) sessions = s.filter((x) => x && (x.camera_id === id || x.camera === id));
  else if (s && typeof s === "object") {
    const mine = s.cameras && typeof s.cameras === "object" ? s.cameras[id] : s[id];
    if (mine !== undefined) sessions = mine;
  }
  return {push: push, sources: sources, sessions: sessions};
}

function sessionsText(x) {
  if (!x || typeof x !== "object" || !Array.isArray(x.streams)) return summary(x);
  const head = (x.held === undefined ? "?" : x.held) + "/" +
    (x.max_sessions === undefined || x.max_sessions === null ? "-" : x.max_sessions) +
    " held" + (x.tunnels ? ", " + x.tunnels + " tunnel(s)" : "");
  const streams = x.streams.map((s) => {
    const who = Object.entries(s.consumers || {}).map(([k, v]) => k + " " + v).join(", ");
    return s.stream + ": " + (s.upstream || "-") + (who ? " (" + who + ")" : "") +
      (s.last_error ? " - " + s.last_error : "");
  });
  return [head, ...streams].join("; ");
}

function summary(x) {
  if (x === null || x === undefined) return "-";
  if (typeof x !== "object") return String(x);
  if (Array.isArray(x)) return x.length ? x.map(summary).join("; ") : "none";
  return Object.entries(x).filter(([, v]) => v !== null && typeof v !== "object")
    .map(([k, v]) => k + " " + v).join(", ") || JSON.stringify(x).slice(0, 200);
}

// ---- cards --------------------------------------------------------------------------------

function makeCard(c) {
  const card = {id: c.id, data: c, seen: {}, label: c.id, pc: null, statsTimer: 0,
    thumb: {url: "", at: 0, busy: false}, held: null, image: null, imageTimers: {},
    talk: null, micTrack: null, ptzBusy: null, presetsLoaded: false, imageLoaded: false};
  const root = el("section", null, "card");
  root.dataset.camera = c.id;
  card.root = root;

  const head = el("header");
  card.name = el("h3");
  card.state = el("span", null, "state");
  card.run = el("span", null, "muted");
  head.append(card.name, card.state, card.run);
  card.meta = el("div", null, "muted meta");

  const media = el("div", null, "media");
  card.video = el("video");
  card.video.muted = true;
  card.video.autoplay = true;
  card.video.playsInline = true;
  card.video.hidden = true;
  card.img = el("img", null, "thumb");
  card.img.alt = "snapshot";
  card.img.hidden = true;
  card.none = el("div", "no picture yet", "none");
  media.append(card.none, card.img, card.video);

  const live = el("div", null, "row live");
  card.liveBtn = button("Start live", "live-btn", "start or stop the live view");
  card.liveBtn.addEventListener("click", () => toggleLive(card));
  card.snapBtn = button("Snapshot", "snap-btn", "take a snapshot");
  card.snapBtn.addEventListener("click", () => snapshot(card, true));
  card.runBtn = button("Pause", "run-btn", "pause or resume the camera");
  card.runBtn.addEventListener("click", () => toggleRun(card));
  card.talkBtn = button("Hold to talk", "talk", "push to talk");
  card.talkBtn.hidden = true;
  card.talkBtn.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    try { card.talkBtn.setPointerCapture(e.pointerId); } catch (err) { /* synthetic pointer */ }
    talk(card, true);
  });
  for (const ev of ["pointerup", "pointercancel", "pointerleave"]) {
    card.talkBtn.addEventListener(ev, () => talk(card, false));
  }
  card.stats = el("span", "", "stats");
  live.append(card.liveBtn, card.snapBtn, card.runBtn, card.talkBtn, card.stats);

  card.ptz = el("div", null, "ptz");
  card.ptz.hidden = true;
  const pad = el("div", null, "pad");
  const hold = (b, body) => {
    b.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      try { b.setPointerCapture(e.pointerId); } catch (err) { /* synthetic pointer */ }
      ptzHold(card, body);
    });
    for (const ev of ["pointerup", "pointercancel", "pointerleave", "lostpointercapture"]) {
      b.addEventListener(ev, () => ptzRelease(card));
    }
    b.addEventListener("contextmenu", (e) => e.preventDefault());
    const key = (e) => e.key === "Enter" || e.key === " ";
    b.addEventListener("keydown", (e) => {  // Enter or Space held: the same as a press
      if (key(e) && !e.repeat) { e.preventDefault(); ptzHold(card, body); }
    });
    b.addEventListener("keyup", (e) => { if (key(e)) ptzRelease(card); });
    b.addEventListener("blur", () => ptzRelease(card));
  };
  for (const [cls, glyph] of MOVES) {
    const b = button(glyph, cls, "move " + cls);
    hold(b, {[cls]: PTZ_SPEED});
    pad.append(b);
  }
  const home = button("home", "home", "go to the home position");
  home.addEventListener("click", () => act(card, () => send("PUT",
    onvif(card, "/ptz/home/apply"))));
  pad.append(home);
  const zoom = el("div", null, "zoom");
  const zin = button("+", "zoom-in", "zoom in"), zout = button("\u2212", "zoom-out", "zoom out");
  hold(zin, {zoom_in: PTZ_SPEED});
  hold(zout, {zoom_out: PTZ_SPEED});
  zoom.append(zin, zout);
  const presets = el("div", null, "presets");
  card.presetSel = el("select");
  card.presetSel.setAttribute("aria-label", "preset");
  card.presetGo = button("Go", "preset-go", "go to the preset");
  card.presetGo.addEventListener("click", () => {
    const name = card.presetSel.value;
    if (name) act(card, () => send("POST", onvif(card, "/ptz/preset/apply"), {preset_name: name}));
  });
  const reload = button("\u21bb", "preset-reload", "reload the presets");
  reload.addEventListener("click", () => loadPresets(card));
  presets.append(card.presetSel, card.presetGo, reload);
  card.ptz.append(pad, zoom, presets);

  card.imageBox = el("div", null, "image");
  card.imageBox.hidden = true;
  card.sliders = {};
  for (const [label, key, path] of IMAGE_SETTINGS) {
    const input = el("input");
    input.type = "range";
    input.name = path;
    input.setAttribute("aria-label", label);
    input.disabled = true;
    const out = el("output", "-");
    input.addEventListener("input", () => {
      out.textContent = input.value;
      clearTimeout(card.imageTimers[path]);
      card.imageTimers[path] = setTimeout(() => writeImage(card, path, key), IMAGE_DEBOUNCE);
    });
    card.sliders[key] = {input: input, out: out, label: el("label", label)};
    card.imageBox.append(card.sliders[key].label, input, out);
  }

  card.relay = el("dl", null, "relay");
  card.error = el("div", null, "bad card-err");
  card.error.setAttribute("role", "alert");
  root.append(head, card.meta, media, live, card.ptz, card.imageBox, card.relay, card.error);
  return card;
}

const onvif = (card, tail) => "/api/v1/onvif/" + encodeURIComponent(card.id) + tail;

async function act(card, fn) {
  try {
    card.error.textContent = "";
    return await fn();
  } catch (e) {
    card.error.textContent = message(e);
    return undefined;
  }
}

function updateCard(card, c, st) {
  card.data = c;
  const title = c.name || [c.manufacturer, c.model].filter(Boolean).join(" ") || c.id;
  card.label = title;
  card.name.textContent = title;
  const state = String(c.state || "unknown");
  card.state.textContent = state;
  card.state.className = "state st-" + state.replace(/[^a-z_]/g, "");
  card.run.textContent = c.run_state || "";
  const paused = c.run_state === "paused";
  card.runBtn.textContent = paused ? "Resume" : "Pause";
  card.runBtn.classList.toggle("on", paused);
  const meta = [];
  if (c.name && c.model) meta.push(c.model);
  if (c.serial_number) meta.push("S/N " + c.serial_number);
  if (c.address) meta.push(c.address);
  meta.push(bitrate(c.bitrate_bps));
  if (c.last_error || c.reason) meta.push(c.last_error || c.reason);
  card.meta.textContent = meta.join(" \u00b7 ");
  card.talkBtn.hidden = c.backchannel !== true;
  const online = state === "online";
  card.ptz.hidden = !(c.ptz && online);
  card.imageBox.hidden = !(c.imaging && online);
  if (online && c.ptz && !card.presetsLoaded) { card.presetsLoaded = true; loadPresets(card); }
  if (online && c.imaging && !card.imageLoaded) { card.imageLoaded = true; loadImage(card); }
  const r = relayOf(st, c.id);
  const rows = [];
  rows.push(["push", r.push.length ? r.push.map((p) => p.state + (p.reason ? " (" +
    p.reason + ")" : "") + " \u2192 " + (p.target || "-")).join("; ") : "none"]);
  rows.push(["restream", r.sources.length ? r.sources.map((s) => s.stream + " " +
    s.upstream + ", " + s.subscribers + " viewer(s)").join("; ") : "none"]);
  if (r.sessions !== null) rows.push(["sessions", sessionsText(r.sessions)]);
  fill(card.relay, rows);
  observe(card, "state", state);
  observe(card, "run_state", c.run_state || "running");
  observe(card, "push", r.push.map((p) => p.state).join(",") || "none");
  if (card.thumb.url) {
    card.img.src = card.thumb.url;
    card.img.hidden = false;
    card.none.hidden = true;
  }
}

function renderCameras(list, st) {
  const box = $("cameras");
  $("no-cameras").hidden = list.length > 0;
  const ids = new Set(list.map((c) => c.id));
  for (const [id, card] of cards) {
    if (!ids.has(id)) {
      stopLive(card);
      if (card.thumb.url) URL.revokeObjectURL(card.thumb.url);
      card.root.remove();
      cards.delete(id);
    }
  }
  for (const c of list) {
    let card = cards.get(c.id);
    if (!card) {
      card = makeCard(c);
      cards.set(c.id, card);
      box.append(card.root);
    }
    updateCard(card, c, st);
  }
}

// ---- snapshots ----------------------------------------------------------------------------

function wantThumbs() {
  const now = Date.now();
  for (const card of cards.values()) {
    const c = card.data;
    if (c.state !== "online" || c.run_state === "paused" || queue.includes(card)) continue;
    if (card.thumb.busy || now - card.thumb.at < THUMB_PERIOD) continue;
    queue.push(card);
  }
  pump();
}

function pump() {
  while (running < THUMB_PARALLEL && queue.length) {
    running++;
    snapshot(queue.shift(), false).finally(() => { running--; pump(); });
  }
}

async function snapshot(card, asked) {
  const th = card.thumb;
  if (th.busy) return;
  th.busy = true;
  try {
    const r = await request("/api/v1/camerasnapshots/" + encodeURIComponent(card.id));
    const b = await r.blob();
    if (th.url) URL.revokeObjectURL(th.url);
    th.url = URL.createObjectURL(b);
    card.img.src = th.url;
    card.img.hidden = false;
    card.none.hidden = true;
    if (asked) card.error.textContent = "";
  } catch (e) {
    if (asked) card.error.textContent = message(e);
  } finally {
    th.at = Date.now();
    th.busy = false;
  }
}

// ---- run state ----------------------------------------------------------------------------

async function toggleRun(card) {
  const want = card.data.run_state === "paused" ? "running" : "paused";
  const rec = await act(card, async () => (await send("PUT", "/api/v1/cameras/" +
    encodeURIComponent(card.id) + "/run_state", {run_state: want})).json());
  if (rec && rec.id) {
    if (want === "paused") stopLive(card);
    updateCard(card, Object.assign({}, card.data, rec), last.status);
  }
}

// ---- live view (WHEP) ---------------------------------------------------------------------

function iceDone(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ICE_WAIT);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function startLive(card) {
  const pc = new RTCPeerConnection({iceServers: []});
  card.pc = pc;
  card.liveBtn.textContent = "Stop live";
  card.liveBtn.classList.add("on");
  pc.addTransceiver("video", {direction: "recvonly"});
  if (card.data.backchannel === true) {
    // negotiated up front: the microphone goes in later with replaceTrack, no renegotiation
    card.talk = pc.addTransceiver("audio", {direction: "sendrecv"});
  }
  pc.addEventListener("track", (e) => {
    if (e.track.kind !== "video") return;
    card.video.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
    card.video.hidden = false;
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "failed" && card.pc === pc) {
      card.error.textContent = "live view: connection failed";
      stopLive(card);
    }
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceDone(pc);
    const r = await request("/api/v1/webrtc/" + encodeURIComponent(card.id), {
      method: "POST",
      headers: {"Content-Type": "application/sdp"},
      body: pc.localDescription.sdp,
    });
    const answer = await r.text();
    if (card.pc !== pc) return;
    await pc.setRemoteDescription({type: "answer", sdp: answer});
    card.statsTimer = setInterval(() => readStats(card, pc), STATS_PERIOD);
    card.error.textContent = "";
  } catch (e) {
    if (card.pc === pc) {
      card.error.textContent = "live view: " + message(e);
      stopLive(card);
    }
  }
}

function stopLive(card) {
  talk(card, false);
  clearInterval(card.statsTimer);
  card.statsTimer = 0;
  if (card.pc) card.pc.close();
  card.pc = null;
  card.talk = null;
  card.video.srcObject = null;
  card.video.hidden = true;
  card.liveBtn.textContent = "Start live";
  card.liveBtn.classList.remove("on");
  card.stats.textContent = "";
  delete card.root.dataset.framesDecoded;
}

function toggleLive(card) {
  if (card.pc) stopLive(card); else startLive(card);
}

async function readStats(card, pc) {
  if (card.pc !== pc) return;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    const fps = s.framesPerSecond === undefined ? "-" : Math.round(s.framesPerSecond);
    const size = s.frameWidth ? s.frameWidth + "\u00d7" + s.frameHeight : "-";
    card.stats.textContent = fps + " fps \u00b7 " + size + " \u00b7 " + (s.framesDecoded || 0) +
      " frames";
    card.root.dataset.framesDecoded = String(s.framesDecoded || 0);
    card.root.dataset.fps = String(s.framesPerSecond || 0);
    card.root.dataset.size = size;
  });
}

// ---- push to talk -------------------------------------------------------------------------

async function talk(card, on) {
  const sender = card.talk ? card.talk.sender : null;
  card.talkBtn.classList.toggle("on", on && sender !== null);
  card.talkWanted = on;
  if (!sender) {
    if (on) card.error.textContent = "start the live view to talk";
    return;
  }
  if (!on) {
    await sender.replaceTrack(null);
    return;
  }
  try {
    if (!card.micTrack) {  // asked once; kept for the next press
      const stream = await navigator.mediaDevices.getUserMedia({audio: true});
      card.micTrack = stream.getAudioTracks()[0];
    }
    if (card.talkWanted && card.talk && card.talk.sender === sender) {
      await sender.replaceTrack(card.micTrack);
    }
  } catch (e) {
    card.error.textContent = "microphone: " + message(e);
    card.talkBtn.classList.remove("on");
  }
}

// ---- PTZ ----------------------------------------------------------------------------------

// Held pad button: a continuous move at PTZ_SPEED, repeated every PTZ_REPEAT ms while held
// (the camera's own timeout stops it if the page dies); released: a Stop.
// While a move is held the card's data-ptz is "moving".
async function ptzHold(card, body) {
  const hold = {body: body};
  card.held = hold;
  while (card.ptzBusy) {  // the previous hold still ending
    await card.ptzBusy;
    if (card.held !== hold) return;
  }
  card.root.dataset.ptz = "moving";
  let done;
  card.ptzBusy = new Promise((resolve) => { done = resolve; });
  try {
    while (card.held === hold) {
      try {
        await send("PUT", onvif(card, "/ptz/continuous"), body);
        card.error.textContent = "";
      } catch (e) {
        card.error.textContent = "PTZ: " + message(e);
        break;
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, PTZ_REPEAT);
        hold.wake = () => { clearTimeout(timer); resolve(); };
      });
    }
  } finally {
    try {
      await send("PUT", onvif(card, "/ptz/stop"));
    } catch (e) {
      card.error.textContent = "PTZ stop: " + message(e);
    }
    if (card.held === hold) card.held = null;
    card.ptzBusy = null;
    delete card.root.dataset.ptz;
    done();
  }
}

function ptzRelease(card) {
  const hold = card.held;
  card.held = null;
  if (hold && hold.wake) hold.wake();
}

async function loadPresets(card) {
  const reply = await act(card, () => getJson(onvif(card, "/ptz/presets")));
  if (!reply) return;
  const keep = card.presetSel.value;
  card.presetSel.replaceChildren();
  for (const name of reply.presets || []) {
    const o = el("option", name);
    o.value = name;
    card.presetSel.append(o);
  }
  if (!card.presetSel.options.length) {
    const o = el("option", "no presets");
    o.value = "";
    card.presetSel.append(o);
  }
  if (keep) card.presetSel.value = keep;
}

// ---- image settings -----------------------------------------------------------------------

function showImage(card, image) {
  card.image = image;
  for (const [, key] of IMAGE_SETTINGS) {
    const s = card.sliders[key], v = image[key];
    const usable = v && v.supported_range;
    s.input.disabled = !usable;
    s.input.hidden = !usable;
    s.label.hidden = !usable;
    s.out.hidden = !usable;
    if (!usable) continue;
    s.input.min = String(v.supported_range.min_val);
    s.input.max = String(v.supported_range.max_val);
    const span = v.supported_range.max_val - v.supported_range.min_val;
    s.input.step = span > 20 ? "1" : String(span / 100);
    s.input.value = String(v.current_value);
    s.out.textContent = String(v.current_value);
  }
}

async function loadImage(card) {
  const image = await act(card, () => getJson(onvif(card, "/image")));
  if (image) showImage(card, image);
}

async function writeImage(card, path, key) {
  const input = card.sliders[key].input;
  const ok = await act(card, () => send("PUT", onvif(card, "/image/" + path),
    {value: Number(input.value)}));
  await loadImage(card);  // the value the camera holds after the write
  if (ok) card.sliders[key].out.dataset.written = input.value;
}

// ---- refresh loop -------------------------------------------------------------------------

const last = {status: null, cameras: []};

async function refresh() {
  try {
    const st = await getJson("/api/v1/status");
    last.status = st;
    renderStatus(st);
    const page = await getJson("/api/v1/cameras?limit=1000");
    const list = Array.isArray(page.cameras) ? page.cameras : [];
    const health = (st.health && st.health.cameras) || {};
    for (const c of list) {
      const h = health[c.id];
      if (h && c.bitrate_bps == null) c.bitrate_bps = h.bitrate_bps;
    }
    last.cameras = list;
    renderCameras(list, st);
    wantThumbs();
    $("err").textContent = "";
    $("updated").textContent = new Date().toLocaleTimeString();
  } catch (e) {
    $("err").textContent = "Cannot read the agent: " + message(e);
  } finally {
    setTimeout(refresh, PERIOD);
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "hidden") return;
  for (const card of cards.values()) { ptzRelease(card); talk(card, false); }
});
window.addEventListener("pagehide", () => {
  for (const card of cards.values()) { ptzRelease(card); stopLive(card); }
});

// For a later event stream and for tests: the cards and the event hook.
window.cameraAgentConsole = {addEvents: addEvents, cards: cards};

refresh();
