// Tally's live dashboard: one metric, one window, one aggregate, the last 30 minutes.
// Plain browser JS (no build step). Needs the uPlot IIFE build (global `uPlot`) loaded first.
(() => {
  "use strict";

  const RANGE_MS = 30 * 60_000;
  const MAX_SERIES = 12;
  const STATUS_EVERY_MS = 2_000;
  const MIN_REDRAW_MS = 250; // at most 4 redraws a second
  const TICK_MS = 5_000; // slide the time axis and drop old points even without updates
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10_000;
  const CHART_HEIGHT = 340;
  const PALETTE = [
    "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
    "#db2777", "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#a16207",
  ];
  const OTHER_COLOR = "#9ca3af";
  const ADDITIVE = new Set(["count", "sum"]);

  const $ = (id) => document.getElementById(id);
  const el = {
    metric: $("metric"), window: $("window"), aggregate: $("aggregate"), conn: $("conn"),
    info: $("metric-info"), chart: $("chart"), empty: $("empty"),
    nFinal: $("n-final"), nProvisional: $("n-provisional"), nCorrected: $("n-corrected"), nUpdates: $("n-updates"),
    nodeState: $("node-state"), nodeId: $("node-id"), watermark: $("watermark"),
  };

  /** @type {{name:string, kind:string, value:string|null, groupBy:string[], where:Record<string,string>, aggregates:string[], windows:string[], lateness:number}[]} */
  let metrics = [];
  let selected = { metric: "", win: "", agg: "" };
  /** (start, dims key) → point, for the selected metric and window. */
  let points = new Map();
  let updates = 0;
  let loadError = "";
  let generation = 0; // bumped on every selection change; stale callbacks compare and bail out

  // ---------------------------------------------------------------- header: node status

  const fmtInt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "—");
  const pad2 = (n) => String(n).padStart(2, "0");
  const fmtTime = (ms) => {
    const d = new Date(ms);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  };
  const fmtDuration = (ms) => {
    for (const [unit, size] of [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1_000]]) {
      if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
    }
    return `${ms}ms`;
  };
  const fmtLag = (ms) => (ms < 1_000 ? `${Math.max(0, Math.round(ms))} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`);

  async function refreshStatus() {
    try {
      const res = await fetch("/v1/status", { cache: "no-store" });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const s = await res.json();
      el.nodeState.classList.toggle("bad", !s.ready);
      el.nodeId.textContent = `${s.node ?? "?"}${s.ready ? "" : " (starting)"}`;
      el.watermark.textContent = typeof s.watermark === "number"
        ? `${fmtTime(s.watermark)} (${fmtLag(Date.now() - s.watermark)} behind)`
        : "— (no events yet)";
      for (const k of ["events", "messages", "duplicates", "rejected", "unmatched"]) {
        const node = $(`c-${k}`);
        if (node) node.textContent = fmtInt(s.counters?.[k]);
      }
    } catch {
      el.nodeState.classList.add("bad");
      el.nodeId.textContent = "unreachable";
    }
  }

  // ---------------------------------------------------------------- pickers and URL hash

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    return { metric: p.get("metric") ?? "", win: p.get("window") ?? "", agg: p.get("agg") ?? "" };
  }

  function writeHash() {
    const p = new URLSearchParams({ metric: selected.metric, window: selected.win, agg: selected.agg });
    history.replaceState(null, "", `#${p}`);
  }

  function fillSelect(select, values, value) {
    select.replaceChildren(...values.map((v) => new Option(v, v)));
    select.value = values.includes(value) ? value : (values[0] ?? "");
    return select.value;
  }

  const currentRule = () => metrics.find((m) => m.name === selected.metric);

  function describe(rule) {
    const parts = [`kind ${rule.kind}`];
    if (rule.value) parts.push(`value ${rule.value}`);
    if (rule.groupBy.length) parts.push(`grouped by ${rule.groupBy.join(", ")}`);
    const where = Object.entries(rule.where ?? {});
    if (where.length) parts.push(`where ${where.map(([k, v]) => `${k}=${v}`).join(" ")}`);
    parts.push(`lateness ${fmtDuration(rule.lateness)}`);
    return parts.join(" · ");
  }

  /** Applies a (possibly partial) selection, fixes it up against the rules, and reloads if it changed. */
  function select(want) {
    const names = metrics.map((m) => m.name);
    const metric = fillSelect(el.metric, names, want.metric);
    const rule = metrics.find((m) => m.name === metric);
    const win = fillSelect(el.window, rule ? rule.windows : [], want.win);
    // The chart plots numbers: lists (top-K) and bucket maps (hist) are for the API and later views.
    const plottable = rule ? rule.aggregates.filter((a) => !/^top\d+:|^hist$/.test(a)) : [];
    const agg = fillSelect(el.aggregate, plottable, want.agg);
    el.info.textContent = rule ? describe(rule) : "no metrics configured";
    const streamChanged = metric !== selected.metric || win !== selected.win;
    const aggChanged = agg !== selected.agg;
    selected = { metric, win, agg };
    writeHash();
    if (streamChanged) restartStream();
    else if (aggChanged) {
      destroyChart(); // other series, other axis
      scheduleRender(true);
    }
  }

  el.metric.addEventListener("change", () => select({ metric: el.metric.value, win: selected.win, agg: selected.agg }));
  el.window.addEventListener("change", () => select({ ...selected, win: el.window.value }));
  el.aggregate.addEventListener("change", () => select({ ...selected, agg: el.aggregate.value }));
  window.addEventListener("hashchange", () => {
    const h = readHash();
    if (h.metric !== selected.metric || h.win !== selected.win || h.agg !== selected.agg) select(h);
  });

  // ---------------------------------------------------------------- data: query + WebSocket, merged

  const dimsKey = (dims) => Object.keys(dims).sort().map((k) => `${k}=${dims[k]}`).join("\u0000");
  const pointKey = (p) => `${p.start}\u0001${dimsKey(p.dims ?? {})}`;

  /** Keeps the newer of two versions of one window: revisions only grow, and so does the event count. */
  function merge(p) {
    if (!p || typeof p.start !== "number") return;
    const key = pointKey(p);
    const old = points.get(key);
    if (old && (old.revision > p.revision || (old.revision === p.revision && old.eventCount > p.eventCount))) return;
    points.set(key, p);
  }

  function setCounters() {
    el.chart.dataset.points = String(points.size);
    el.chart.dataset.updates = String(updates);
    el.nUpdates.textContent = fmtInt(updates);
  }

  async function loadHistory(gen) {
    const now = Date.now();
    const q = new URLSearchParams({ window: selected.win, from: String(now - RANGE_MS), to: String(now + 60_000) });
    try {
      const res = await fetch(`/v1/metrics/${encodeURIComponent(selected.metric)}?${q}`, { cache: "no-store" });
      if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error ?? `HTTP ${res.status}`);
      const body = await res.json();
      if (gen !== generation) return;
      loadError = "";
      for (const p of body.points ?? []) merge(p);
      setCounters();
      scheduleRender();
    } catch (e) {
      if (gen !== generation) return;
      loadError = `Could not load ${selected.metric}: ${e.message}`;
      scheduleRender();
    }
  }

  let socket = null;
  let reconnectTimer = 0;
  let attempt = 0;

  function setConn(text, cls) {
    el.conn.textContent = text;
    el.conn.className = cls ?? "";
  }

  function closeSocket() {
    clearTimeout(reconnectTimer);
    if (socket) {
      const s = socket;
      socket = null;
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
      s.close();
    }
  }

  function connect(gen) {
    const q = new URLSearchParams({ metric: selected.metric, window: selected.win });
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const s = new WebSocket(`${scheme}://${location.host}/v1/subscribe?${q}`);
    socket = s;
    setConn(attempt ? "reconnecting" : "connecting");
    s.onopen = () => {
      if (gen !== generation) return;
      setConn("live", "live");
      // Whatever changed while we were away is in the store: fetch it again after a reconnect.
      if (attempt > 0) void loadHistory(gen);
      attempt = 0;
    };
    s.onmessage = (ev) => {
      if (gen !== generation) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.type !== "result") return;
      updates++;
      if (msg.metric === selected.metric && msg.window === selected.win) merge(msg.point);
      setCounters();
      scheduleRender();
    };
    s.onclose = () => {
      if (gen !== generation || socket !== s) return;
      socket = null;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.8 + Math.random() * 0.4);
      attempt++;
      setConn(`offline, retrying in ${Math.ceil(delay / 1000)} s`, "down");
      reconnectTimer = setTimeout(() => connect(gen), delay);
    };
    s.onerror = () => {}; // onclose follows and schedules the retry
  }

  function restartStream() {
    const gen = ++generation;
    closeSocket();
    attempt = 0;
    points = new Map();
    setCounters();
    destroyChart();
    loadError = "";
    scheduleRender(true);
    if (!selected.metric || !selected.win) {
      setConn("no metric");
      return;
    }
    connect(gen);
    void loadHistory(gen);
  }

  // ---------------------------------------------------------------- chart

  let plot = null;
  let plotSignature = "";
  let provisionalFrom = null; // x (seconds) from which windows are still provisional, for the shaded band
  let lastStartSec = null; // newest window start held (seconds), so the x axis always shows it
  const hidden = new Set(); // series labels the user switched off in the legend

  function parseDurationMs(text) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text);
    if (!m) return 0;
    return Number(m[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2]];
  }

  /** `1m` → 1m tumbling; `5m/30s` → 5m windows every 30s. */
  function windowSpec(id) {
    const [size, slide] = id.split("/");
    const sizeMs = parseDurationMs(size);
    return { sizeMs, slideMs: slide ? parseDurationMs(slide) : sizeMs };
  }

  function labelOf(dims, groupBy) {
    const keys = [...groupBy.filter((k) => k in dims), ...Object.keys(dims).filter((k) => !groupBy.includes(k)).sort()];
    return keys.length ? keys.map((k) => `${k}=${dims[k]}`).join(" ") : "all";
  }

  /** The held points as uPlot columns: x = window start (s), one column per dimension combination. */
  function buildData() {
    const rule = currentRule();
    const agg = selected.agg;
    const additive = ADDITIVE.has(agg);
    const now = Date.now();
    const cutoff = now - RANGE_MS;
    const { slideMs } = windowSpec(selected.win);

    const groups = new Map(); // label → { weight, byStart: Map<start, value> }
    const starts = new Set();
    let nFinal = 0, nProvisional = 0, nCorrected = 0;
    let oldestProvisional = Infinity;
    for (const [key, p] of points) {
      if (p.start < cutoff) {
        points.delete(key);
        continue;
      }
      if (p.status === "final") nFinal++;
      else if (p.status === "corrected") nCorrected++;
      else {
        nProvisional++;
        oldestProvisional = Math.min(oldestProvisional, p.start);
      }
      const label = labelOf(p.dims ?? {}, rule ? rule.groupBy : []);
      let g = groups.get(label);
      if (!g) groups.set(label, (g = { weight: 0, byStart: new Map() }));
      g.weight += p.eventCount ?? 0;
      const v = p.values?.[agg];
      g.byStart.set(p.start, typeof v === "number" && Number.isFinite(v) ? v : null);
      starts.add(p.start);
    }

    // Additive aggregates are 0 where a window saw no events: fill the grid so lines drop to 0 instead of bridging.
    let xs = [...starts].sort((a, b) => a - b);
    if (additive && xs.length && slideMs > 0) {
      const last = Math.max(xs[xs.length - 1], now - (now % slideMs));
      const grid = [];
      for (let t = xs[0]; t <= last && grid.length < 5_000; t += slideMs) grid.push(t);
      if (grid.length < 5_000) xs = [...new Set([...grid, ...xs])].sort((a, b) => a - b);
    }

    const ranked = [...groups.entries()].sort((a, b) => b[1].weight - a[1].weight || (a[0] < b[0] ? -1 : 1));
    const shown = ranked.slice(0, MAX_SERIES).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const rest = ranked.slice(MAX_SERIES);
    const column = (g) => xs.map((t) => (g.byStart.has(t) ? g.byStart.get(t) : additive ? 0 : null));
    const series = shown.map(([label, g]) => ({ label, values: column(g) }));
    if (rest.length && additive) {
      series.push({
        label: `other (${rest.length})`,
        other: true,
        values: xs.map((t) => rest.reduce((sum, [, g]) => sum + (g.byStart.get(t) ?? 0), 0)),
      });
    }
    return {
      xs: xs.map((t) => t / 1000),
      series,
      dropped: additive ? 0 : rest.length,
      counts: { nFinal, nProvisional, nCorrected },
      oldestProvisional: Number.isFinite(oldestProvisional) ? oldestProvisional / 1000 : null,
    };
  }

  function latest(column) {
    for (let i = column.length - 1; i >= 0; i--) if (column[i] != null) return column[i];
    return null;
  }

  function fmtValue(v) {
    if (v == null) return "—";
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    return v.toLocaleString("en-US", { maximumFractionDigits: Math.abs(v) < 10 ? 3 : 1 });
  }

  /** Shades the provisional part of the time axis so open windows read as "may still change". */
  function drawProvisionalBand(u) {
    if (provisionalFrom == null) return;
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    const x0 = Math.max(left, u.valToPos(provisionalFrom, "x", true));
    const x1 = left + width;
    if (x1 <= x0) return;
    ctx.save();
    ctx.fillStyle = "rgba(245, 158, 11, 0.10)";
    ctx.fillRect(x0, top, x1 - x0, height);
    ctx.strokeStyle = "rgba(217, 119, 6, 0.8)";
    ctx.setLineDash([4 * devicePixelRatio, 4 * devicePixelRatio]);
    ctx.lineWidth = devicePixelRatio;
    ctx.beginPath();
    ctx.moveTo(x0, top);
    ctx.lineTo(x0, top + height);
    ctx.stroke();
    ctx.fillStyle = "rgba(180, 83, 9, 0.9)";
    ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    const text = "provisional";
    const tw = ctx.measureText(text).width;
    ctx.fillText(text, Math.min(x0 + 4 * devicePixelRatio, x1 - tw - 2 * devicePixelRatio), top + 4 * devicePixelRatio);
    ctx.restore();
  }

  function makePlot(data) {
    const additive = ADDITIVE.has(selected.agg);
    const opts = {
      width: Math.max(300, el.chart.clientWidth),
      height: CHART_HEIGHT,
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: {
          time: true,
          range: () => {
            const now = Date.now();
            const { slideMs } = windowSpec(selected.win);
            const last = lastStartSec == null ? now : lastStartSec * 1000 + slideMs;
            return [(now - RANGE_MS) / 1000, Math.max(now, last) / 1000];
          },
        },
        y: {
          range: (u, min, max) => {
            if (min == null || max == null) return [0, 1];
            if (additive) return [Math.min(0, min), max > 0 ? max * 1.1 : 1];
            if (min === max) return [min - 1, max + 1];
            const padding = (max - min) * 0.1;
            return [min - padding, max + padding];
          },
        },
      },
      axes: [
        { stroke: "#6b7385", grid: { stroke: "#eef0f4" }, ticks: { stroke: "#e3e6ec" } },
        {
          stroke: "#6b7385",
          grid: { stroke: "#eef0f4" },
          ticks: { stroke: "#e3e6ec" },
          label: selected.agg,
          labelSize: 20,
          values: (u, splits) => splits.map(fmtValue),
          size: (u, values) => (values ? Math.max(...values.map((v) => String(v).length)) * 7 + 18 : 50),
        },
      ],
      series: [
        // Away from the cursor the legend shows the newest window's values.
        {
          label: "window start",
          value: (u, v, si, idx) => {
            const x = idx == null ? u.data[0][u.data[0].length - 1] : v;
            return x == null ? "—" : `${fmtTime(x * 1000)}${idx == null ? " (latest)" : ""}`;
          },
        },
        ...data.series.map((s, i) => ({
          label: s.label,
          show: !hidden.has(s.label),
          stroke: s.other ? OTHER_COLOR : PALETTE[i % PALETTE.length],
          width: 1.5,
          dash: s.other ? [5, 4] : undefined,
          spanGaps: false,
          points: { size: 6 },
          value: (u, v, si, idx) => fmtValue(idx == null ? latest(u.data[si]) : v),
        })),
      ],
      hooks: {
        draw: [drawProvisionalBand],
        setSeries: [
          (u, i) => {
            if (i == null || !u.series[i]) return;
            const s = u.series[i];
            if (s.show) hidden.delete(s.label);
            else hidden.add(s.label);
          },
        ],
      },
    };
    return new uPlot(opts, [data.xs, ...data.series.map((s) => s.values)], el.chart);
  }

  function destroyChart() {
    if (plot) plot.destroy();
    plot = null;
    plotSignature = "";
  }

  let renderTimer = 0;
  let lastRender = 0;

  /** Coalesces redraws: at most one every MIN_REDRAW_MS. */
  function scheduleRender(soon = false) {
    if (renderTimer) return;
    const wait = soon ? 0 : Math.max(0, MIN_REDRAW_MS - (performance.now() - lastRender));
    renderTimer = setTimeout(() => {
      renderTimer = 0;
      lastRender = performance.now();
      render();
    }, wait);
  }

  function render() {
    const data = buildData();
    setCounters();
    el.nFinal.textContent = fmtInt(data.counts.nFinal);
    el.nProvisional.textContent = fmtInt(data.counts.nProvisional);
    el.nCorrected.textContent = fmtInt(data.counts.nCorrected);
    provisionalFrom = data.oldestProvisional;
    lastStartSec = data.xs.length ? data.xs[data.xs.length - 1] : null;

    if (!data.xs.length) {
      if (loadError) el.empty.textContent = loadError;
      else if (!selected.metric) el.empty.textContent = metrics.length ? "Pick a metric." : "No metrics configured.";
      else el.empty.textContent = `No ${selected.metric} results for window ${selected.win} in the last 30 minutes yet.`;
    }
    el.empty.hidden = data.xs.length > 0;
    el.chart.title = data.dropped ? `${data.dropped} smaller series not shown (${selected.agg} cannot be summed into "other")` : "";

    const signature = `${selected.metric}|${selected.win}|${selected.agg}|${data.series.map((s) => s.label).join("|")}`;
    if (!plot || signature !== plotSignature) {
      destroyChart();
      plot = makePlot(data);
      plotSignature = signature;
    } else {
      plot.setData([data.xs, ...data.series.map((s) => s.values)]);
    }
  }

  window.addEventListener("resize", () => {
    if (plot) plot.setSize({ width: Math.max(300, el.chart.clientWidth), height: CHART_HEIGHT });
  });

  // ---------------------------------------------------------------- start

  async function loadMetrics() {
    try {
      const res = await fetch("/v1/metrics", { cache: "no-store" });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      metrics = (await res.json()).metrics ?? [];
      loadError = "";
    } catch (e) {
      loadError = `Could not load the metric list: ${e.message}`;
      scheduleRender();
      setConn("offline", "down");
      setTimeout(loadMetrics, 3_000);
      return;
    }
    select(readHash());
  }

  void refreshStatus();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(() => scheduleRender(), TICK_MS);
  void loadMetrics();
})();
