// The wallboard: queue tiles pushed over the live stream, opened with a signed link.
// URL: /wallboard?token=<link token>[&rotate=20][&per_page=8][&warn=5][&title=Floor 2]

import { LiveStream, QueueTile, formatTime, serverNow, syncClock } from "/static/live.js";

const params = new URLSearchParams(window.location.search);
const hashParams = new URLSearchParams(window.location.hash.slice(1));
const token = params.get("token") || hashParams.get("token");
const number = (name, fallback, min, max) => {
  const v = Number(params.get(name));
  return params.has(name) && Number.isFinite(v) ? Math.min(max, Math.max(min, v)) : fallback;
};
const rotateMs = number("rotate", 20, 0, 3600) * 1000;
const perPageParam = number("per_page", 0, 0, 200);
const warnPts = number("warn", 5, 0, 100);

const main = document.getElementById("tiles");
const statusBox = document.getElementById("status");
const statusIcon = statusBox.querySelector(".status-icon");
const statusText = statusBox.querySelector(".status-text");
const notice = document.getElementById("notice");
const clock = document.getElementById("clock");
const pageIndicator = document.getElementById("page-indicator");
if (params.get("title")) document.getElementById("title").textContent = params.get("title");

const tiles = new Map(); // "tenant/queue" -> QueueTile
let order = [];
let tenantsShown = [];
let pages = [[]];
let page = 0;
let state = "connecting";
let heartbeatMs = 2000;
let refreshMs = 5000;
let lastDataAt = 0;
const stats = { snapshots: 0, lastSnapshotAt: 0, state, pages: 1 };
window.__callpulse = stats;

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function setStatus(kind, icon, text) {
  statusBox.className = `status status-${kind}`;
  statusBox.dataset.status = kind;
  statusIcon.textContent = icon;
  statusText.textContent = text;
}

// -- tiles and pages ---------------------------------------------------------------------

function setTiles(list) {
  const keys = list.map((t) => `${t.tenant_id}/${t.queue_id}`);
  for (const [key, tile] of tiles) {
    if (!keys.includes(key)) {
      tile.root.remove();
      tiles.delete(key);
    }
  }
  for (const t of list) {
    const key = `${t.tenant_id}/${t.queue_id}`;
    if (!tiles.has(key)) {
      const showTenant = tenantsShown.length > 1;
      tiles.set(key, new QueueTile(t.tenant_id, t.queue_id, { showTenant, warnPts }));
    }
  }
  order = keys;
  main.replaceChildren(...order.map((k) => tiles.get(k).root));
  if (!order.length) showNotice("No queues to show yet: they appear with their first call.");
  else if (state !== "denied") showNotice("");
  paginate();
}

// How many tiles fit on the screen: grid columns times the rows of tiles that fit.
function tilesPerPage() {
  main.style.setProperty("--scale", "1");
  if (perPageParam) return perPageParam;
  const all = order.map((k) => tiles.get(k).root);
  if (!all.length) return 1;
  for (const node of all) node.hidden = false;
  const columns = getComputedStyle(main).gridTemplateColumns.split(" ").filter(Boolean).length || 1;
  const gap = parseFloat(getComputedStyle(main).rowGap) || 0;
  const tileHeight = Math.max(...all.slice(0, columns).map((n) => n.offsetHeight), 1);
  const rows = Math.max(1, Math.floor((main.clientHeight + gap) / (tileHeight + gap)));
  return columns * rows;
}

function paginate() {
  const perPage = tilesPerPage();
  pages = [];
  for (let i = 0; i < order.length; i += perPage) pages.push(order.slice(i, i + perPage));
  if (!pages.length) pages = [[]];
  page %= pages.length;
  stats.pages = pages.length;
  showPage();
}

function showPage() {
  const visible = new Set(pages[page]);
  for (const key of order) tiles.get(key).root.hidden = !visible.has(key);
  pageIndicator.textContent = pages.length > 1 ? `Page ${page + 1} of ${pages.length}` : "";
  fit();
}

// Few tiles on a big screen: scale them up (up to 3x) as far as the page still fits.
const fits = () => main.scrollHeight <= main.clientHeight + 1 && main.scrollWidth <= main.clientWidth + 1;

function fit() {
  let lo = 1;
  let hi = 3;
  main.style.setProperty("--scale", "1");
  if (!fits()) return;
  for (let i = 0; i < 8; i += 1) {
    const mid = (lo + hi) / 2;
    main.style.setProperty("--scale", String(mid));
    if (fits()) lo = mid;
    else hi = mid;
  }
  main.style.setProperty("--scale", String(lo));
  stats.scale = lo;
}

if (rotateMs > 0) {
  setInterval(() => {
    if (pages.length > 1) {
      page = (page + 1) % pages.length;
      showPage();
    }
  }, rotateMs);
}
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(paginate, 200);
});

// -- staleness, ticking ------------------------------------------------------------------

function isStale() {
  return state !== "open" || Date.now() - lastDataAt > 3 * heartbeatMs + 1000;
}

function tick() {
  const stale = isStale();
  // A tile not refreshed for two refresh periods is stale even if the stream is alive.
  const now = Date.now();
  for (const tile of tiles.values()) tile.tick(stale || now - tile.receivedAt > 2 * refreshMs + 5000);
  document.body.classList.toggle("is-stale", stale);
  clock.textContent = formatTime(serverNow());
  clock.dateTime = new Date(serverNow()).toISOString();
  if (state === "denied") return;
  const last = stats.lastSnapshotAt
    ? ` (last update ${formatTime(stats.lastSnapshotAt)}, ${Math.round((Date.now() - stats.lastSnapshotAt) / 1000)} s ago)`
    : "";
  if (!stats.connects) setStatus("connecting", "⟳", "Connecting…");
  else if (stale) setStatus("stale", "⟳", `Reconnecting: data is stale${last}`);
  else if ([...tiles.values()].some((t) => t.view && t.view.stale)) setStatus("delayed", "⚠", "Live, but delayed");
  else setStatus("live", "●", "Live");
}
setInterval(tick, 250);

// -- the stream --------------------------------------------------------------------------

function onEvent(type, data) {
  lastDataAt = Date.now();
  const body = JSON.parse(data);
  if (type === "hello") {
    tenantsShown = body.tenants;
    heartbeatMs = body.heartbeat_s * 1000;
    refreshMs = body.refresh_s * 1000;
    stream.heartbeatMs = heartbeatMs;
    syncClock(body.server_time);
  } else if (type === "tiles") {
    setTiles(body.tiles);
  } else if (type === "heartbeat") {
    syncClock(body.server_time);
  } else if (type === "snapshot") {
    const tile = tiles.get(`${body.tenant_id}/${body.queue_id}`);
    if (tile) tile.update(body);
    if (!fits()) fit();
    stats.snapshots += 1;
    stats.lastSnapshotAt = Date.now();
  } else if (type === "revoked") {
    stream.stop("denied", body.reason);
  }
}

function onState(next, detail) {
  state = next;
  stats.state = next;
  if (next === "open") {
    lastDataAt = Date.now();
    stats.connects = (stats.connects || 0) + 1;
  }
  if (next === "denied") {
    setStatus("denied", "✕", "Link not valid");
    showNotice(`This wallboard link no longer works (${detail}). Ask for a new link.`);
    document.body.classList.add("is-stale");
    for (const tile of tiles.values()) tile.tick(true);
  }
  tick();
}

const stream = new LiveStream(`/v1/stream?token=${encodeURIComponent(token || "")}`, { onEvent, onState });
if (token) {
  stream.start();
} else {
  stream.stop("denied", "the address has no token");
}

// -- kiosk: full screen, no cursor when idle ----------------------------------------------

const fullscreen = document.getElementById("fullscreen");
fullscreen.addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
});
document.addEventListener("fullscreenchange", () => {
  fullscreen.textContent = document.fullscreenElement ? "Exit full screen" : "Full screen";
  paginate();
});
let idleTimer = null;
window.addEventListener("pointermove", () => {
  document.body.classList.remove("idle");
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => document.body.classList.add("idle"), 3000);
});
