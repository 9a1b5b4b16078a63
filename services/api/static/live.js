// CallPulse live pages: the stream client, number formats and queue tiles shared by the
// wallboard and the team-lead view. Plain ES module, no build step, no dependencies.
//
// The stream is read with fetch() rather than EventSource so that it can carry an API key
// header (team view), tell a refused link (401) from a server that is down, and notice a
// silent connection (no byte for a few heartbeats) and reconnect. It honours the server's
// `retry` and sends `Last-Event-ID` like EventSource does.

export const STATES = [
  ["available", "Available", "●"],
  ["on_call", "On call", "☎"],
  ["wrapup", "Wrap-up", "✎"],
  ["aux", "Aux", "‖"],
];

// -- the server clock --------------------------------------------------------------------

// Milliseconds to add to Date.now() to get the server's clock (from the latest message).
let clockOffsetMs = 0;

export function serverNow() {
  return Date.now() + clockOffsetMs;
}

export function syncClock(serverIso) {
  const server = Date.parse(serverIso);
  if (!Number.isNaN(server)) clockOffsetMs = server - Date.now();
}

// -- formats (numbers are text; null shows as an em dash) ---------------------------------

const pad = (n) => String(n).padStart(2, "0");

function clockText(totalSeconds) {
  const s = Math.max(0, totalSeconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

// An average duration (ASA, AHT): rounded to the nearest second, m:ss or h:mm:ss.
export function formatAverage(ms) {
  return ms == null ? "—" : clockText(Math.round(ms / 1000));
}

// An elapsed duration that ticks (longest wait, time in state): whole seconds elapsed.
export function formatElapsed(ms) {
  return ms == null ? "—" : clockText(Math.floor(ms / 1000));
}

export function formatPercent(pct) {
  return pct == null ? "—" : `${pct.toFixed(1)}%`;
}

export function formatFraction(value) {
  return value == null ? "—" : formatPercent(value * 100);
}

export function formatTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// -- the stream --------------------------------------------------------------------------

// States reported to onState: "connecting", "open", "retrying", "denied", "ended".
export class LiveStream {
  constructor(url, { headers = {}, onEvent, onState }) {
    this.url = url;
    this.headers = headers;
    this.onEvent = onEvent;
    this.onState = onState;
    this.retryMs = 1000;
    this.heartbeatMs = 2000;
    this.lastEventId = null;
    this.lastByteAt = 0;
    this.attempt = 0;
    this.stopped = false;
    this.controller = null;
    this.timer = null;
    this.stats = { connects: 0, events: 0 };
    this.watchdog = setInterval(() => this.checkAlive(), 500);
  }

  start() {
    this.connect();
  }

  stop(state = "ended", detail = "") {
    this.stopped = true;
    clearInterval(this.watchdog);
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.onState(state, detail);
  }

  // A connection that sent nothing for three heartbeats is dead even if TCP has not noticed.
  checkAlive() {
    if (this.controller && this.lastByteAt && Date.now() - this.lastByteAt > 3 * this.heartbeatMs + 1000) {
      this.controller.abort();
    }
  }

  retryLater(detail) {
    if (this.stopped) return;
    this.attempt += 1;
    const base = Math.min(this.retryMs * 2 ** Math.min(this.attempt - 1, 3), 5000);
    const delay = base * (0.75 + Math.random() * 0.5);
    this.onState("retrying", detail);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  async connect() {
    if (this.stopped) return;
    this.onState("connecting", "");
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Accept: "text/event-stream", ...this.headers };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    let response;
    try {
      response = await fetch(this.url, { headers, cache: "no-store", signal: controller.signal });
    } catch (err) {
      this.controller = null;
      this.retryLater("the server cannot be reached");
      return;
    }
    if (response.status === 401 || response.status === 403) {
      let message = "access refused";
      try {
        message = (await response.json()).error.message;
      } catch (err) {
        /* keep the generic message */
      }
      this.controller = null;
      this.stop("denied", message);
      return;
    }
    if (!response.ok || !response.body) {
      this.controller = null;
      this.retryLater(`the server answered ${response.status}`);
      return;
    }
    this.stats.connects += 1;
    this.attempt = 0;
    this.lastByteAt = Date.now();
    this.onState("open", "");
    try {
      await this.read(response.body.getReader());
    } catch (err) {
      /* aborted by the watchdog or a network failure: reconnect below */
    }
    if (this.controller === controller) this.controller = null;
    this.retryLater("the connection was lost");
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      this.lastByteAt = Date.now();
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.id !== null) this.lastEventId = event.id;
          if (event.data.length) {
            this.stats.events += 1;
            this.onEvent(event.type, event.data.join("\n"));
          }
          if (this.stopped) return;
          event = { type: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the heartbeat
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event.type = val;
        else if (field === "data") event.data.push(val);
        else if (field === "id") event.id = val;
        else if (field === "retry" && /^\d+$/.test(val)) this.retryMs = Number(val);
      }
    }
  }
}

// -- queue tiles -------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const LEVELS = {
  ok: ["✓", "On target"],
  warn: ["▲", "Warning"],
  bad: ["✕", "Missed"],
  none: ["–", "No calls yet"],
};

// The level of an SL figure: met (the contract says so), warning (below target by at most
// `warnPts` points), missed, or none (no calls, SL is null).
export function slLevel(sl, warnPts) {
  if (!sl || sl.value_pct == null) return "none";
  if (sl.met) return "ok";
  return sl.value_pct >= sl.target_pct - warnPts ? "warn" : "bad";
}

function field(parent, name, className, label) {
  const box = el("div", className);
  if (label) box.append(el("span", "label", label));
  const value = el("span", "value", "—");
  value.dataset.field = name;
  box.append(value);
  parent.append(box);
  return value;
}

export class QueueTile {
  constructor(tenant, queue, { showTenant = true, warnPts = 5 } = {}) {
    this.tenant = tenant;
    this.queue = queue;
    this.warnPts = warnPts;
    this.view = null;
    this.receivedAt = 0;
    const root = el("article", "tile level-none");
    root.dataset.tenant = tenant;
    root.dataset.queue = queue;
    const head = el("header", "tile-head");
    const name = el("h2", "tile-name");
    if (showTenant) name.append(el("span", "tile-tenant", tenant));
    name.append(el("span", "tile-queue", queue));
    const level = el("p", "tile-level");
    this.levelIcon = el("span", "level-icon", "–");
    this.levelIcon.setAttribute("aria-hidden", "true");
    this.levelText = el("span", "level-text", "No calls yet");
    level.append(this.levelIcon, " ", this.levelText);
    head.append(name, level);

    const sl = el("section", "tile-sl");
    this.slValue = field(sl, "interval.sl", "sl-now", "SL this interval");
    this.slTarget = el("p", "sl-target", "");
    sl.append(this.slTarget);
    const today = el("p", "sl-today");
    today.append(el("span", "label", "Today "));
    this.todayIcon = el("span", "level-icon small", "");
    this.todayIcon.setAttribute("aria-hidden", "true");
    this.todayValue = el("span", "value", "—");
    this.todayValue.dataset.field = "today.sl";
    this.todayText = el("span", "sr-level", "");
    today.append(this.todayIcon, this.todayValue, this.todayText);
    sl.append(today);

    const gauges = el("section", "tile-gauges");
    this.waiting = field(gauges, "waiting", "gauge", "Waiting");
    this.longest = field(gauges, "longest", "gauge", "Longest wait");

    const agents = el("section", "tile-agents");
    this.agents = {};
    for (const [state, label, icon] of STATES) {
      const box = el("div", `agent-count agent-${state}`);
      const i = el("span", "agent-icon", icon);
      i.setAttribute("aria-hidden", "true");
      box.append(i, el("span", "label", label));
      const value = el("span", "value", "—");
      value.dataset.field = `agents.${state}`;
      box.append(value);
      agents.append(box);
      this.agents[state] = value;
    }

    const table = el("table", "tile-windows");
    const thead = el("thead");
    const hr = el("tr");
    hr.append(el("th", "", ""), el("th", "", "Interval"), el("th", "", "Today"));
    thead.append(hr);
    const tbody = el("tbody");
    this.cells = {};
    for (const [key, label] of [["asa", "ASA"], ["aht", "AHT"], ["abandon", "Abandoned"]]) {
      const tr = el("tr");
      tr.append(el("th", "", label));
      for (const win of ["interval", "today"]) {
        const td = el("td", "", "—");
        td.dataset.field = `${win}.${key}`;
        this.cells[`${win}.${key}`] = td;
        tr.append(td);
      }
      tbody.append(tr);
    }
    table.append(thead, tbody);

    this.staleNote = el("p", "tile-stale", "");
    this.staleNote.hidden = true;
    root.append(head, sl, gauges, agents, table, this.staleNote);
    this.root = root;
  }

  update(view) {
    this.view = view;
    this.receivedAt = Date.now();
    this.root.dataset.asOf = view.as_of;
    const windows = Object.fromEntries(view.windows.map((w) => [w.name, w]));
    const interval = windows.interval;
    const today = windows.today;
    const level = slLevel(interval && interval.service_level, this.warnPts);
    this.root.classList.remove("level-ok", "level-warn", "level-bad", "level-none");
    this.root.classList.add(`level-${level}`);
    this.root.dataset.level = level;
    [this.levelIcon.textContent, this.levelText.textContent] = LEVELS[level];
    const sl = interval.service_level;
    this.slValue.textContent = formatPercent(sl.value_pct);
    const within = sl.inclusive ? "≤" : "<";
    this.slTarget.textContent = `target ${sl.target_pct}% answered ${within}\u00a0${sl.threshold_s}\u00a0s`;
    const todayLevel = slLevel(today && today.service_level, this.warnPts);
    this.todayIcon.textContent = LEVELS[todayLevel][0];
    this.todayValue.textContent = formatPercent(today.service_level.value_pct);
    this.todayText.textContent = ` ${LEVELS[todayLevel][1]}`;
    this.todayValue.parentElement.dataset.level = todayLevel;
    const g = view.gauges;
    this.waiting.textContent = String(g.calls_waiting);
    for (const [state] of STATES) this.agents[state].textContent = String(g.agents[state] ?? 0);
    for (const [name, w] of [["interval", interval], ["today", today]]) {
      this.cells[`${name}.asa`].textContent = formatAverage(w.asa_ms.value);
      this.cells[`${name}.aht`].textContent = formatAverage(w.aht_ms.value);
      this.cells[`${name}.abandon`].textContent = formatFraction(w.abandon_rate.value);
    }
    this.tick(false);
  }

  // Longest wait between updates: the server's clock now minus the oldest waiting call's
  // queue time. Frozen while the data is stale (the call may have been answered meanwhile).
  tick(stale) {
    const view = this.view;
    if (!view) return;
    const g = view.gauges;
    if (!stale) {
      const oldest = g.oldest_queued_at ? Date.parse(g.oldest_queued_at) : null;
      const wait = oldest == null || g.calls_waiting === 0 ? 0 : serverNow() - oldest;
      this.longest.textContent = formatElapsed(Math.max(wait, 0));
    }
    const tileStale = stale || view.stale;
    this.root.classList.toggle("is-stale", tileStale);
    this.staleNote.hidden = !tileStale;
    if (tileStale) {
      const age = Math.max(0, Math.round((serverNow() - Date.parse(view.as_of)) / 1000));
      this.staleNote.textContent = view.stale && !stale
        ? "⚠ DELAYED: the pipeline is behind"
        : `⚠ STALE: data from ${formatTime(Date.parse(view.as_of) - clockOffsetMs)} (${age} s ago)`;
    }
  }
}
