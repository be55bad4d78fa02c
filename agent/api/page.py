"""The agent's local status page, `GET /`: one self-contained HTML document.

The page holds no data and is served without a token. Its script reads `/api/v1/status` and
`/api/v1/cameras` every 5 s, fetches snapshot thumbnails (as blob URLs) every 30 s, two at a
time, and asks once for the API token when a call answers 401 (kept in sessionStorage).
"""

from __future__ import annotations

import secrets

from aiohttp import web

#: Path of the page.
PAGE_PATH = "/"

_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'nonce-{nonce}'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>camera-agent</title>
<link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:12px;color:#222;background:#f6f6f6}
h1{font-size:18px;margin:0 0 8px}h2{font-size:15px;margin:16px 0 6px}
.box{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 10px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
dt{color:#666}dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:6px;text-align:left;vertical-align:top}
th{background:#eee;font-weight:600}
.wrap{overflow-x:auto}.muted{color:#777;font-size:12px}
.st{font-weight:600}.st-online,.ok{color:#17803d}.st-unauthorized{color:#b35c00}
.st-unreachable,.st-error,.bad{color:#c0262d}.st-not_onvif{color:#666}
img.thumb{width:120px;max-width:30vw;border-radius:4px;background:#ddd;display:block}
#err{color:#c0262d;min-height:1em}
@media (max-width:600px){.hide-sm{display:none}}
</style>
</head>
<body>
<h1>camera-agent <span id="version" class="muted"></span></h1>
<div class="muted">uptime <span id="uptime">-</span> &middot;
updated <span id="updated">-</span></div>
<div id="err" role="alert"></div>
<h2>Activation</h2>
<div class="box"><dl id="activation"></dl></div>
<h2>Links</h2>
<div class="box"><dl id="links"></dl></div>
<h2>Cameras</h2>
<div class="wrap"><table>
<thead><tr><th>Snapshot</th><th>Name / model</th><th class="hide-sm">Address</th><th>State</th>
<th>Run</th><th>Bitrate</th><th class="hide-sm">Last error</th></tr></thead>
<tbody id="cameras"></tbody>
</table></div>
<script nonce="__NONCE__">
"use strict";
const KEY = "camera-agent-token", PERIOD = 5000, THUMB_PERIOD = 30000, THUMB_PARALLEL = 2;
let token = sessionStorage.getItem(KEY) || "";
let asked = false;
const thumbs = new Map();  // camera id -> {url, at}
const queue = [];
let running = 0;
const $ = (id) => document.getElementById(id);

async function call(path, blob) {
  for (;;) {
    const headers = token ? {Authorization: "Bearer " + token} : {};
    const r = await fetch(path, {headers: headers, cache: "no-store"});
    if (r.status === 401 && !asked) {
      asked = true;
      const given = window.prompt("API token");
      if (given && given.trim()) {
        token = given.trim();
        sessionStorage.setItem(KEY, token);
        continue;
      }
    }
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return blob ? r.blob() : r.json();
  }
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
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

function link(x) {
  if (!x) return ["not configured", "muted"];
  return [String(x.state || "unknown") + (x.last_error ? " (" + x.last_error + ")" : ""),
          x.alive || x.state === "ready" ? "ok" : "bad"];
}

function renderStatus(st) {
  $("version").textContent = st.version || "";
  $("uptime").textContent = duration(st.uptime_s);
  const a = st.activation || {};
  const streams = (a.streams || []).map((s) => s.stream_name + " \\u2192 " + (s.camera_id || "-"));
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

function renderCameras(list) {
  const body = $("cameras");
  body.replaceChildren();
  if (!list.length) {
    const td = el("td", "no cameras yet", "muted");
    td.colSpan = 7;
    const tr = el("tr");
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const c of list) {
    const tr = el("tr");
    const shot = el("td");
    const th = thumbs.get(c.id);
    if (th && th.url) {
      const img = el("img", null, "thumb");
      img.alt = "snapshot";
      img.src = th.url;
      shot.append(img);
    } else {
      shot.textContent = "-";
    }
    const name = el("td");
    name.append(el("div", c.name || [c.manufacturer, c.model].filter(Boolean).join(" ") || c.id));
    if (c.name && c.model) name.append(el("div", c.model, "muted"));
    if (c.serial_number) name.append(el("div", "S/N " + c.serial_number, "muted"));
    const state = String(c.state || "unknown");
    tr.append(shot, name, el("td", c.address || "-", "hide-sm"),
      el("td", state, "st st-" + state.replace(/[^a-z_]/g, "")),
      el("td", c.run_state || "-"), el("td", bitrate(c.bitrate_bps)),
      el("td", c.last_error || c.reason || "-", "hide-sm"));
    body.append(tr);
  }
}

function wantThumbs(list) {
  const now = Date.now();
  for (const c of list) {
    if (c.state !== "online" || c.run_state === "paused" || queue.includes(c.id)) continue;
    const th = thumbs.get(c.id);
    if (th && (th.busy || now - th.at < THUMB_PERIOD)) continue;
    queue.push(c.id);
  }
  pump();
}

function pump() {
  while (running < THUMB_PARALLEL && queue.length) {
    const id = queue.shift();
    const th = thumbs.get(id) || {url: "", at: 0};
    th.busy = true;
    thumbs.set(id, th);
    running++;
    call("/api/v1/camerasnapshots/" + encodeURIComponent(id), true).then((b) => {
      if (th.url) URL.revokeObjectURL(th.url);
      th.url = URL.createObjectURL(b);
    }).catch(() => {}).finally(() => {
      th.at = Date.now();
      th.busy = false;
      running--;
      render();
      pump();
    });
  }
}

let last = [];
function render() { renderCameras(last); }

async function refresh() {
  try {
    const st = await call("/api/v1/status");
    renderStatus(st);
    const page = await call("/api/v1/cameras?limit=1000");
    last = Array.isArray(page.cameras) ? page.cameras : [];
    const health = (st.health && st.health.cameras) || {};
    for (const c of last) {
      const h = health[c.id];
      if (h && c.bitrate_bps == null) c.bitrate_bps = h.bitrate_bps;
    }
    const ids = new Set(last.map((c) => c.id));
    for (const [id, th] of thumbs) {
      if (!ids.has(id) && !th.busy) { if (th.url) URL.revokeObjectURL(th.url); thumbs.delete(id); }
    }
    render();
    wantThumbs(last);
    $("err").textContent = "";
    $("updated").textContent = new Date().toLocaleTimeString();
  } catch (e) {
    $("err").textContent = "Cannot read the agent: " + (e && e.message ? e.message : e);
  } finally {
    setTimeout(refresh, PERIOD);
  }
}

refresh();
</script>
</body>
</html>
"""


async def status_page(request: web.Request) -> web.Response:
    """The status page, with a fresh script nonce and strict security headers."""
    nonce = secrets.token_urlsafe(16)
    return web.Response(
        text=_HTML.replace("__NONCE__", nonce),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": _CSP.format(nonce=nonce),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


def page_routes() -> list[web.RouteDef]:
    return [web.get(PAGE_PATH, status_page, allow_head=False)]
