// The team-lead view: the team's agents against the team average, its open alerts (with
// acknowledge) and its queues. URL: /team?team=<team id>[&tenant=<id> for admin keys].
// Agents are re-read every few seconds (time in state ticks in between); queue tiles are
// pushed over the live stream; alerts are re-read every few seconds.

import {
  LiveStream,
  QueueTile,
  formatAverage,
  formatElapsed,
  formatFraction,
  formatTime,
  serverNow,
  syncClock,
} from "/static/live.js";

const AGENT_POLL_MS = 3000;
const ALERT_POLL_MS = 5000;
const KEY_ITEM = "callpulse.key";
const STATE_LABELS = {
  available: ["●", "Available"],
  on_call: ["☎", "On call"],
  wrapup: ["✎", "Wrap-up"],
  aux: ["‖", "Aux"],
  offline: ["○", "Offline"],
};
const SEVERITY = { critical: "✕", warning: "▲", info: "●" };

const params = new URLSearchParams(window.location.search);
let team = params.get("team") || "";
const tenant = params.get("tenant");
let key = sessionStorage.getItem(KEY_ITEM) || "";

const $ = (id) => document.getElementById(id);
const notice = $("notice");
const statusBox = $("status");
const windowSelect = $("window");
windowSelect.value = params.get("window") || "today";
if (!windowSelect.value) windowSelect.value = "today"; // not one of the options

let view = null; // the latest TeamView
let viewAt = 0;
let alertsOk = true;
let stream = null;
let streamQueues = "";
let streamState = "connecting";
const tiles = new Map();
const stats = { agentReads: 0, alertReads: 0, snapshots: 0 };
window.__callpulse = stats;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function withTenant(path) {
  if (!tenant) return path;
  return `${path}${path.includes("?") ? "&" : "?"}tenant=${encodeURIComponent(tenant)}`;
}

async function api(path, options = {}) {
  const response = await fetch(withTenant(path), {
    ...options,
    cache: "no-store",
    headers: { Authorization: `Bearer ${key}`, ...(options.headers || {}) },
  });
  if (response.status === 401) {
    signOut("The key was refused (invalid, expired or revoked). Enter a valid team-lead key.");
    throw new Error("unauthenticated");
  }
  return response;
}

function signOut(message) {
  sessionStorage.removeItem(KEY_ITEM);
  key = "";
  if (stream) stream.stop("ended");
  stream = null;
  $("content").hidden = true;
  $("login").hidden = false;
  $("login-team").value = team;
  showNotice(message || "");
}

// -- agents ------------------------------------------------------------------------------

function stateCell(agent) {
  const td = el("td", "text");
  const [icon, label] = STATE_LABELS[agent.state] || ["?", agent.state || "unknown"];
  const span = el("span", `state state-${agent.state}`);
  const i = el("span", "", `${icon} `);
  i.setAttribute("aria-hidden", "true");
  span.append(i, label);
  td.append(span);
  if (agent.reason) td.append(el("span", "vs", agent.reason));
  td.dataset.field = "state";
  return td;
}

function compared(text, field, vsText, outlier) {
  const td = el("td");
  const value = el("span", "value", text);
  value.dataset.field = field;
  td.append(value);
  if (outlier) {
    td.classList.add("outlier");
    td.append(el("span", "outlier-tag", outlier));
  }
  if (vsText) td.append(el("span", "vs", vsText));
  return td;
}

const signed = (x, digits, unit) => (x == null ? "" : `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(x).toFixed(digits)}${unit}`);

function outlierText(agent, kind) {
  if (agent.outliers.includes(`${kind}_high`)) return "⚠ High";
  if (agent.outliers.includes(`${kind}_low`)) return "⚠ Low";
  return "";
}

function renderAgents() {
  const body = $("agents").tBodies[0];
  const rows = view.agents.map((agent) => {
    const tr = el("tr");
    tr.dataset.agent = agent.agent_id;
    if (agent.outliers.length) tr.dataset.outlier = agent.outliers.join(" ");
    const name = el("th", "", agent.agent_id);
    name.scope = "row";
    const since = el("td", "", "—");
    since.dataset.field = "time_in_state";
    since.dataset.since = agent.state_since || "";
    const handled = el("td", "", String(agent.handled));
    handled.dataset.field = "handled";
    const ahtVs = agent.aht_vs_team_pct == null ? "" : `${signed(agent.aht_vs_team_pct, 0, "%")} vs team`;
    const occVs = agent.occupancy_vs_team_pts == null ? "" : `${signed(agent.occupancy_vs_team_pts, 1, " pts")} vs team`;
    tr.append(
      name,
      stateCell(agent),
      since,
      handled,
      compared(formatAverage(agent.aht_ms.value), "aht", ahtVs, outlierText(agent, "aht")),
      compared(formatFraction(agent.occupancy.value), "occupancy", occVs, outlierText(agent, "occupancy")),
    );
    return tr;
  });
  body.replaceChildren(...rows);
  const foot = $("agents").tFoot;
  const tr = el("tr");
  const th = el("th", "", "Team average");
  th.scope = "row";
  const aht = el("td", "", formatAverage(view.team.aht_ms.value));
  aht.dataset.field = "team.aht";
  const occ = el("td", "", formatFraction(view.team.occupancy.value));
  occ.dataset.field = "team.occupancy";
  const handled = el("td", "", String(view.team.handled));
  handled.dataset.field = "team.handled";
  tr.append(th, el("td", "text", `${view.team.agents} agents`), el("td", "", ""), handled, aht, occ);
  foot.replaceChildren(tr);

  const summary = $("summary");
  const items = [["Agents", String(view.team.agents)]];
  for (const [state, [icon, label]] of Object.entries(STATE_LABELS)) {
    items.push([`${icon} ${label}`, String(view.team.agents_by_state[state] ?? 0)]);
  }
  items.push(["Handled", String(view.team.handled)], ["AHT", formatAverage(view.team.aht_ms.value)],
    ["Occupancy", formatFraction(view.team.occupancy.value)]);
  summary.replaceChildren(...items.map(([dt, dd]) => {
    const box = el("div");
    box.append(el("dt", "", dt), el("dd", "", dd));
    return box;
  }));
  $("h-summary").textContent = `Team ${view.team_id}`;
  $("title").textContent = `Team ${view.team_id}`;
  const rule = view.outlier_rule;
  $("rule").textContent = `Averages over ${windowSelect.selectedOptions[0].textContent.toLowerCase()} (${view.timezone}). ` +
    `⚠ marks an agent whose AHT is more than ${rule.aht_pct}% from the team's, or whose occupancy is more than ${rule.occupancy_pts} points from it.`;
  tick();
}

async function readAgents() {
  if (!key) return;
  try {
    const response = await api(`/v1/teams/${encodeURIComponent(team)}/agents?window=${windowSelect.value}`);
    if (response.status === 404) {
      showNotice(`No agent of team “${team}” is known yet.`);
      return;
    }
    if (!response.ok) {
      showNotice(`The team could not be read (${response.status}).`);
      return;
    }
    view = await response.json();
    viewAt = Date.now();
    syncClock(view.as_of);
    stats.agentReads += 1;
    if (notice.textContent.startsWith("No agent") || notice.textContent.startsWith("The team")) showNotice("");
    renderAgents();
    watchQueues(view.queues);
  } catch (err) {
    /* unauthenticated (handled) or the server is unreachable: the status shows stale */
  }
}

// -- alerts ------------------------------------------------------------------------------

function renderAlerts(alerts) {
  const queues = view ? view.queues : [];
  const mine = alerts.filter((a) => a.team_id === team || (a.queue_id && queues.includes(a.queue_id)) || (!a.team_id && !a.queue_id));
  const rows = mine.map((alert) => {
    const tr = el("tr");
    tr.dataset.alert = alert.id;
    const sev = el("td", "text");
    const span = el("span", `severity severity-${alert.severity}`, `${SEVERITY[alert.severity] || "●"} ${alert.severity}`);
    sev.append(span, el("span", "vs", alert.state));
    const where = [alert.queue_id && `queue ${alert.queue_id}`, alert.team_id && `team ${alert.team_id}`].filter(Boolean).join(", ");
    const num = (x) => (x == null ? "—" : Number.isInteger(x) ? String(x) : x.toFixed(1));
    const ack = el("td", "text");
    if (alert.acknowledged_by) {
      ack.textContent = `✓ ${alert.acknowledged_by}${alert.acknowledged_at ? ` at ${formatTime(Date.parse(alert.acknowledged_at))}` : ""}`;
    } else {
      const button = el("button", "button", "Acknowledge");
      button.type = "button";
      button.addEventListener("click", () => acknowledge(alert.id, button));
      ack.append(button);
    }
    tr.append(sev, el("td", "text", alert.summary), el("td", "text", where || "tenant"),
      el("td", "", `${num(alert.value)} (limit ${num(alert.threshold)})`),
      el("td", "", alert.started_at ? formatTime(Date.parse(alert.started_at)) : "—"), ack);
    return tr;
  });
  $("alerts").tBodies[0].replaceChildren(...rows);
  $("alerts-note").textContent = mine.length ? "" : "No open alerts for this team.";
}

async function readAlerts() {
  if (!key || !alertsOk) return;
  try {
    const response = await api("/v1/alerts?state=open");
    if (response.status === 404) {
      alertsOk = false;
      $("alerts-note").textContent = "Alerts are not available on this server.";
      return;
    }
    if (!response.ok) {
      $("alerts-note").textContent = `Alerts could not be read (${response.status}).`;
      return;
    }
    renderAlerts((await response.json()).alerts);
    stats.alertReads += 1;
  } catch (err) {
    /* see readAgents */
  }
}

async function acknowledge(id, button) {
  button.disabled = true;
  button.textContent = "Acknowledging…";
  try {
    const response = await api(`/v1/alerts/${encodeURIComponent(id)}/acknowledge`, { method: "POST" });
    if (!response.ok) {
      showNotice(`The alert could not be acknowledged (${response.status}).`);
      button.disabled = false;
      button.textContent = "Acknowledge";
      return;
    }
  } catch (err) {
    button.disabled = false;
    button.textContent = "Acknowledge";
    return;
  }
  await readAlerts();
}

// -- queue tiles -------------------------------------------------------------------------

function watchQueues(queues) {
  const wanted = queues.join(",");
  if (stream && wanted === streamQueues) return;
  if (stream) stream.stop("ended");
  streamQueues = wanted;
  const box = $("tiles");
  box.replaceChildren();
  tiles.clear();
  if (!queues.length) return;
  stream = new LiveStream(withTenant(`/v1/stream?queues=${encodeURIComponent(wanted)}`), {
    headers: { Authorization: `Bearer ${key}` },
    onEvent(type, data) {
      const body = JSON.parse(data);
      if (type === "hello" || type === "heartbeat") {
        syncClock(body.server_time);
      }
      if (type === "hello") {
        stream.heartbeatMs = body.heartbeat_s * 1000;
      } else if (type === "tiles") {
        const list = body.tiles.map((t) => t.queue_id);
        for (const q of list) if (!tiles.has(q)) tiles.set(q, new QueueTile(body.tiles[0].tenant_id, q, { showTenant: false }));
        box.replaceChildren(...list.map((q) => tiles.get(q).root));
      } else if (type === "snapshot") {
        const tile = tiles.get(body.queue_id);
        if (tile) tile.update(body);
        stats.snapshots += 1;
      }
    },
    onState(state, detail) {
      streamState = state;
      stats.streamStates = [...(stats.streamStates || []).slice(-9), `${state} ${detail}`.trim()];
      tick();
    },
  });
  stream.start();
}

// -- ticking and status ------------------------------------------------------------------

function tick() {
  $("clock").textContent = formatTime(serverNow());
  if (!view) return;
  for (const td of document.querySelectorAll("td[data-since]")) {
    td.textContent = td.dataset.since ? formatElapsed(serverNow() - Date.parse(td.dataset.since)) : "—";
  }
  const agentsStale = Date.now() - viewAt > 3 * AGENT_POLL_MS + 1000;
  const tilesStale = stream !== null && streamState !== "open";
  for (const tile of tiles.values()) tile.tick(tilesStale);
  const stale = agentsStale || tilesStale;
  if (streamState === "connecting" && stream && stream.stats.connects === 0 && !agentsStale) {
    statusBox.className = "status status-connecting";
    statusBox.dataset.status = "connecting";
    statusBox.querySelector(".status-icon").textContent = "⟳";
    statusBox.querySelector(".status-text").textContent = "Connecting…";
    return;
  }
  document.body.classList.toggle("is-stale", stale);
  statusBox.className = `status status-${stale ? "stale" : "live"}`;
  statusBox.dataset.status = stale ? "stale" : "live";
  statusBox.querySelector(".status-icon").textContent = stale ? "⟳" : "●";
  statusBox.querySelector(".status-text").textContent = stale
    ? `Reconnecting: figures from ${formatTime(viewAt)}`
    : "Live";
}

function start() {
  $("login").hidden = true;
  $("content").hidden = false;
  readAgents();
  readAlerts();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("login-key").value.trim();
  team = $("login-team").value.trim();
  sessionStorage.setItem(KEY_ITEM, key);
  const next = new URLSearchParams(window.location.search);
  next.set("team", team);
  window.history.replaceState(null, "", `?${next}`);
  $("login-key").value = "";
  showNotice("");
  start();
});
$("signout").addEventListener("click", () => signOut(""));
windowSelect.addEventListener("change", readAgents);

setInterval(readAgents, AGENT_POLL_MS);
setInterval(readAlerts, ALERT_POLL_MS);
setInterval(tick, 250);
if (key && team) start();
else signOut("");
