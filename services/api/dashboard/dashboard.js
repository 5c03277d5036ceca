// The live dashboard: polls GET /stats about once a second, keeps five
// minutes of points in memory and draws them on <canvas>; a lookup box
// follows one payment (GET /payments/{id}) and can requeue a rejected one.
// No framework, no build step, nothing fetched but the stack's own URLs
// (root-relative, so it works behind nginx at any host and port).
"use strict";
(function () {
  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 3000;
  const KEEP_MS = 5 * 60 * 1000;      // points kept and drawn
  const WINDOW_MS = 10 * 1000;        // latency quantiles: over the last 10 s
  const STALE_MS = 3500;              // no fresh /stats for this long: "stale"
  const STATS_URL = "/stats";
  const PROCESSORS = ["default", "fallback"];

  // ---------------------------------------------------------------- numbers

  const intFormat = new Intl.NumberFormat("en-US", {maximumFractionDigits: 0});
  const rateFormat = new Intl.NumberFormat("en-US", {maximumFractionDigits: 1, minimumFractionDigits: 1});
  const moneyFormat = new Intl.NumberFormat("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});

  function isNum(v) { return typeof v === "number" && Number.isFinite(v); }
  function fmtInt(v) { return isNum(v) ? intFormat.format(v) : "–"; }
  function fmtRate(v) { return isNum(v) ? rateFormat.format(v) : "–"; }
  function fmtMoney(v) { return isNum(v) ? moneyFormat.format(v) : "–"; }
  function fmtAxis(v) { return v >= 10 || v === 0 ? fmtInt(v) : String(+v.toFixed(2)); }
  function fmtPct(v) { return isNum(v) ? (v * 100).toFixed(1) + "%" : "–"; }
  function fmtBytes(v) {
    if (!isNum(v)) return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  }
  // Seconds in, a short human duration out: 0.42 ms, 3.1 ms, 120 ms, 1.20 s.
  function fmtSeconds(s) {
    if (!isNum(s)) return "–";
    const ms = s * 1000;
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 10) return ms.toFixed(1) + " ms";
    if (ms < 1000) return ms.toFixed(0) + " ms";
    return s.toFixed(2) + " s";
  }
  function fmtAge(ms) {
    if (!isNum(ms)) return "";
    if (ms < 0) ms = 0;
    if (ms < 1000) return "just now";
    if (ms < 60000) return Math.round(ms / 1000) + " s ago";
    if (ms < 3600000) return Math.round(ms / 60000) + " min ago";
    return Math.round(ms / 3600000) + " h ago";
  }
  function fmtTime(t) {
    const d = new Date(t);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  // Every element showing metric `name` gets the text and, for a test or a
  // scraper, the raw value in data-value (empty when unknown).
  function setMetric(name, value, format) {
    const text = (format || fmtInt)(value);
    const raw = value === null || value === undefined || (typeof value === "number" && !Number.isFinite(value))
      ? "" : String(value);
    document.querySelectorAll('[data-metric="' + name + '"]').forEach(el => {
      if (el.textContent !== text) el.textContent = text;
      el.dataset.value = raw;
    });
  }
  function setText(name, text) { setMetric(name, text, v => (v === null || v === undefined || v === "") ? "–" : String(v)); }

  // -------------------------------------------------------------- histograms
  // HIST = {bounds: [b0..b15], counts: [c0..c16] (not cumulative; the last is
  // above the largest bound), sum}. Quantiles as Prometheus' histogram_quantile.

  function histTotal(h) {
    let n = 0;
    for (const c of h.counts) n += c;
    return n;
  }
  function histAdd(a, b) {
    if (!a) return {bounds: b.bounds.slice(), counts: b.counts.slice(), sum: b.sum || 0};
    const counts = a.counts.map((c, i) => c + (b.counts[i] || 0));
    return {bounds: a.bounds, counts: counts, sum: (a.sum || 0) + (b.sum || 0)};
  }
  // What happened between `old` and `cur` of one process; a counter that went
  // backwards means the process restarted: all of `cur` is new since then.
  function histDelta(cur, old) {
    if (!old || old.counts.length !== cur.counts.length) return {hist: cur, reset: false};
    const counts = cur.counts.map((c, i) => c - old.counts[i]);
    if (counts.some(c => c < 0)) return {hist: cur, reset: true};
    return {hist: {bounds: cur.bounds, counts: counts, sum: (cur.sum || 0) - (old.sum || 0)}, reset: false};
  }
  function quantile(q, h) {
    if (!h || !h.counts || !h.bounds) return null;
    const total = histTotal(h);
    if (total <= 0) return null;
    const rank = q * total;
    let cum = 0;
    for (let i = 0; i < h.counts.length; i++) {
      const before = cum;
      cum += h.counts[i];
      if (cum >= rank && h.counts[i] > 0) {
        if (i >= h.bounds.length) return h.bounds[h.bounds.length - 1];  // the +Inf bucket
        const upper = h.bounds[i];
        const lower = i === 0 ? 0 : h.bounds[i - 1];
        return lower + (upper - lower) * ((rank - before) / h.counts[i]);
      }
    }
    return h.bounds[h.bounds.length - 1];
  }
  function isHist(h) {
    return h && Array.isArray(h.bounds) && Array.isArray(h.counts) && h.counts.length >= h.bounds.length;
  }

  // ------------------------------------------------------------------ charts

  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // Time span drawn: the points there are, from one minute up to five.
  function timeSpan(samples, now) {
    const first = samples.length ? samples[0].t : now;
    return Math.min(KEEP_MS, Math.max(60000, now - first));
  }
  function timeStep(span) {
    for (const step of [10000, 15000, 30000, 60000]) if (span / step <= 6) return step;
    return 60000;
  }
  function timeLabel(ago) {
    if (ago === 0) return "now";
    return ago % 60000 === 0 ? "-" + ago / 60000 + "m" : "-" + ago / 1000 + "s";
  }

  class LineChart {
    // series: [{label, color (a CSS variable), get(sample), dashed, offScale}];
    // an offScale series (a bound) does not stretch the axis: when it is far
    // above the others it is left out of the drawing and its legend says so.
    // opts: {format, minMax, log}: log draws decades (latencies).
    constructor(id, series, opts) {
      this.canvas = document.getElementById(id);
      this.legend = document.getElementById("legend-" + id.replace(/^chart-/, ""));
      this.series = series;
      this.format = opts.format;
      this.axisFormat = opts.axisFormat || opts.format;
      this.minMax = opts.minMax || 1;
      this.log = !!opts.log;
      this.integer = !!opts.integer;
      this.legendValues = [];
      if (this.legend) {
        for (const s of series) {
          const key = document.createElement("span");
          key.className = "key";
          const sw = document.createElement("span");
          sw.className = "swatch" + (s.dashed ? " dashed" : "");
          sw.style.background = cssVar(s.color);
          sw.style.color = cssVar(s.color);
          const label = document.createElement("span");
          label.textContent = s.label;
          const value = document.createElement("b");
          value.textContent = "–";
          key.append(sw, label, value);
          this.legend.append(key);
          this.legendValues.push(value);
        }
      }
    }

    scale(samples) {
      let max = 0, min = Infinity, boundMax = 0;
      for (const s of samples) {
        for (const se of this.series) {
          const v = se.get(s);
          if (!isNum(v)) continue;
          if (se.offScale) { if (v > boundMax) boundMax = v; continue; }
          if (v > max) max = v;
          if (v > 0 && v < min) min = v;
        }
      }
      // a bound within reach is drawn, and the axis stretches to show it
      const boundShown = boundMax > 0 && boundMax <= Math.max(max, this.minMax) * 4;
      const top = Math.max(max, boundShown ? boundMax : 0);
      if (this.log) {
        const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(top * 1.25, this.minMax))));
        let lo = isFinite(min) ? Math.pow(10, Math.floor(Math.log10(min))) : hi / 1000;
        lo = Math.max(Math.min(lo, hi / 100), 1e-6);
        return {lo: lo, hi: hi, max: max, boundShown: boundShown};
      }
      let step = niceCeil(Math.max(top * 1.05, this.minMax) / 4);
      if (this.integer) step = Math.max(1, Math.ceil(step));
      const hi = step * Math.max(1, Math.ceil((Math.max(top * 1.05, this.minMax)) / step));
      return {lo: 0, hi: hi, step: step, max: max, boundShown: boundShown};
    }

    draw(samples, now) {
      const c = this.canvas;
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(50, c.clientWidth), h = Math.max(50, c.clientHeight);
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);

      const span = timeSpan(samples, now);
      const t1 = now, t0 = now - span;
      let drawn = 0;
      for (const s of samples) {
        if (this.series.some(se => !se.offScale && isNum(se.get(s)))) drawn++;
      }
      const sc = this.scale(samples);
      const left = 58, right = 12, topPad = 8, bottom = 20;
      const pw = w - left - right, ph = h - topPad - bottom;
      const x = t => left + ((t - t0) / (t1 - t0)) * pw;
      const y = this.log
        ? v => topPad + ph - ((Math.log10(Math.max(v, sc.lo)) - Math.log10(sc.lo)) / (Math.log10(sc.hi) - Math.log10(sc.lo))) * ph
        : v => topPad + ph - ((v - sc.lo) / (sc.hi - sc.lo)) * ph;

      const muted = cssVar("--muted"), grid = cssVar("--grid");
      g.font = "11px system-ui, sans-serif";
      g.lineWidth = 1;
      g.setLineDash([]);
      // horizontal grid and y labels
      const ticks = [];
      if (this.log) for (let v = sc.lo; v <= sc.hi * 1.0001; v *= 10) ticks.push(v);
      else for (let v = 0; v <= sc.hi * 1.0001; v += sc.step) ticks.push(v);
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (const v of ticks) {
        const yy = Math.round(y(v)) + 0.5;
        g.strokeStyle = grid;
        g.beginPath(); g.moveTo(left, yy); g.lineTo(w - right, yy); g.stroke();
        g.fillStyle = muted;
        g.fillText(this.axisFormat(v), left - 6, yy);
      }
      // vertical grid and time labels
      const step = timeStep(span);
      g.textAlign = "center";
      g.textBaseline = "top";
      for (let ago = 0; ago <= span + 1; ago += step) {
        const xx = x(t1 - ago);
        g.fillStyle = muted;
        g.fillText(timeLabel(ago), Math.min(Math.max(xx, left + 12), w - right - 12), h - bottom + 5);
        g.strokeStyle = grid;
        g.beginPath(); g.moveTo(Math.round(xx) + 0.5, topPad); g.lineTo(Math.round(xx) + 0.5, topPad + ph); g.stroke();
      }
      // series: a gap where a value is missing (a failed poll, a reset)
      g.save();
      g.beginPath(); g.rect(left, topPad - 2, pw, ph + 4); g.clip();
      g.lineJoin = "round";
      const lastSample = samples.length ? samples[samples.length - 1] : null;
      this.series.forEach((se, idx) => {
        const v = lastSample ? se.get(lastSample) : null;
        if (this.legendValues[idx]) {
          const off = se.offScale && !sc.boundShown && isNum(v);
          this.legendValues[idx].textContent = isNum(v) ? this.format(v) + (off ? " (off scale)" : "") : "–";
          this.legendValues[idx].dataset.value = isNum(v) ? String(v) : "";
        }
        if (se.offScale && !sc.boundShown) return;
        const color = cssVar(se.color);
        g.strokeStyle = color;
        g.lineWidth = 1.8;
        g.setLineDash(se.dashed ? [5, 4] : []);
        g.beginPath();
        let pen = false, lastX = null, lastY = null;
        for (const s of samples) {
          const sv = se.get(s);
          if (!isNum(sv) || (this.log && sv <= 0)) { pen = false; continue; }
          const px = x(s.t), py = y(sv);
          if (pen) g.lineTo(px, py); else g.moveTo(px, py);
          pen = true; lastX = px; lastY = py;
        }
        g.stroke();
        if (lastX !== null && lastSample && isNum(v)) {
          g.setLineDash([]);
          g.fillStyle = color;
          g.beginPath(); g.arc(lastX, lastY, 2.6, 0, Math.PI * 2); g.fill();
        }
      });
      g.restore();
      c.dataset.points = String(drawn);
      c.dataset.max = String(sc.max);
    }
  }

  // ------------------------------------------------------------------ state

  const samples = [];          // one per successful poll: what the charts draw
  const snaps = [];            // per poll: the histograms, for window quantiles
  const acceptedSeen = new Map();  // instance -> api.accepted (when /stats has no "apis")
  let prev = null;             // the previous successful poll's counters
  let resets = 0;              // counters seen going backwards (restarted processes, purges)
  let lastOk = 0, lastError = "", failures = 0, lastStats = null;

  // An increase of a counter, Prometheus style: backwards means the process
  // restarted at 0, so everything it counts now is new.
  function increase(cur, old) {
    if (!isNum(cur)) return null;
    if (!isNum(old)) return null;
    if (cur < old) { resets++; return cur; }
    return cur - old;
  }

  function num(v) { return isNum(v) ? v : 0; }

  // The counters of one /stats answer, folded to what the rates need.
  function counters(stats) {
    const out = {instances: new Map(), processed: 0, retries: null, unknown: null};
    if (Array.isArray(stats.apis)) {
      for (const a of stats.apis) out.instances.set(a.instance, num(a.answers && a.answers["202"]));
    } else if (stats.api && stats.api.instance !== undefined) {
      // Only the instance that answered: remember the others' last figures.
      acceptedSeen.set(stats.api.instance, num(stats.api.accepted));
      for (const [k, v] of acceptedSeen) out.instances.set(k, v);
    }
    const p = stats.processed || {};
    out.processed = num(p.default && p.default.totalRequests) + num(p.fallback && p.fallback.totalRequests);
    const c = stats.consumer || {};
    out.retries = isNum(c.retries) ? c.retries : null;
    out.unknown = isNum(c.unknownOutcomes) ? c.unknownOutcomes : null;
    return out;
  }

  function intakeIncrease(cur, old) {
    let total = 0;
    for (const [inst, v] of cur.instances) {
      if (!old.instances.has(inst)) continue;   // first sight of an instance: no rate yet
      total += increase(v, old.instances.get(inst));
    }
    return total;
  }

  function apiHistograms(stats) {
    const m = new Map();
    if (Array.isArray(stats.apis)) for (const a of stats.apis) if (isHist(a.seconds)) m.set(a.instance, a.seconds);
    return m;
  }
  function callHistograms(stats) {
    const m = new Map();
    const calls = stats.consumer && stats.consumer.calls;
    if (calls) for (const p of PROCESSORS) if (calls[p] && isHist(calls[p].seconds)) m.set(p, calls[p].seconds);
    return m;
  }
  function sumMap(m) {
    let acc = null;
    for (const h of m.values()) acc = histAdd(acc, h);
    return acc;
  }
  // The snapshot to measure the window from: the newest at least WINDOW_MS old,
  // else the oldest there is.
  function windowBase(now) {
    let base = null;
    for (const s of snaps) {
      if (s.t <= now - WINDOW_MS) base = s; else break;
    }
    return base || snaps[0] || null;
  }
  function windowHist(curMap, baseMap) {
    let acc = null;
    for (const [key, h] of curMap) {
      const d = histDelta(h, baseMap ? baseMap.get(key) : null);
      if (!baseMap || !baseMap.has(key)) continue;   // nothing to subtract from yet
      acc = histAdd(acc, d.hist);
    }
    return acc;
  }

  // ------------------------------------------------------------------ polling

  const charts = {
    throughput: new LineChart("chart-throughput", [
      {label: "intake", color: "--c1", get: s => s.intake},
      {label: "completions", color: "--c2", get: s => s.completions},
    ], {format: fmtRate, axisFormat: fmtAxis}),
    queue: new LineChart("chart-queue", [
      {label: "pending", color: "--c1", get: s => s.pending},
      {label: "delayed", color: "--c3", get: s => s.delayed},
      {label: "in flight", color: "--c2", get: s => s.inFlight},
      {label: "rejected", color: "--c4", get: s => s.rejected},
    ], {format: fmtInt, integer: true}),
    backlog: new LineChart("chart-backlog", [
      {label: "backlog", color: "--c5", get: s => s.backlog},
      {label: "limit", color: "--c4", dashed: true, offScale: true, get: s => s.backlogLimit},
    ], {format: fmtInt, integer: true}),
    latency: new LineChart("chart-latency", [
      {label: "p50", color: "--c2", get: s => s.apiP50},
      {label: "p99", color: "--c3", get: s => s.apiP99},
    ], {format: fmtSeconds, minMax: 0.001, log: true}),
    processors: new LineChart("chart-processors", [
      {label: "default p50", color: "--c1", get: s => s.lat.default.p50},
      {label: "default p99", color: "--c1", dashed: true, get: s => s.lat.default.p99},
      {label: "fallback p50", color: "--c5", get: s => s.lat.fallback.p50},
      {label: "fallback p99", color: "--c5", dashed: true, get: s => s.lat.fallback.p99},
    ], {format: fmtSeconds, minMax: 0.001, log: true}),
    trouble: new LineChart("chart-trouble", [
      {label: "retries", color: "--c3", get: s => s.retryRate},
      {label: "unknown outcomes", color: "--c4", get: s => s.unknownRate},
    ], {format: fmtRate, axisFormat: fmtAxis}),
  };

  function drawCharts() {
    const now = Date.now();
    for (const k in charts) charts[k].draw(samples, now);
  }

  async function fetchJson(url, init) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(url, Object.assign({cache: "no-store", signal: ctl.signal,
                                                headers: {"Accept": "application/json"}}, init || {}));
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      return {status: r.status, ok: r.ok, body: body};
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    const started = Date.now();
    try {
      const r = await fetchJson(STATS_URL);
      if (!r.ok || !r.body || typeof r.body !== "object") {
        const why = r.body && r.body.error ? r.body.error : "";
        throw new Error("HTTP " + r.status + (why ? ": " + why : ""));
      }
      ingest(r.body, Date.now());
      lastOk = Date.now();
      lastError = "";
      failures = 0;
    } catch (e) {
      failures++;
      lastError = e && e.name === "AbortError" ? "timed out" : String(e && e.message || e);
      // a gap in the lines, so a blackout shows as one
      samples.push({t: Date.now(), gap: true, lat: {default: {}, fallback: {}}});
      trim();
      drawCharts();
    }
    showStatus();
    const elapsed = Date.now() - started;
    setTimeout(poll, Math.max(50, POLL_MS - elapsed));
  }

  function trim() {
    const cutoff = Date.now() - KEEP_MS - 5000;
    while (samples.length && samples[0].t < cutoff) samples.shift();
    const snapCutoff = Date.now() - WINDOW_MS - 5000;
    while (snaps.length > 1 && snaps[1].t < snapCutoff) snaps.shift();
  }

  function ingest(stats, t) {
    lastStats = stats;
    const cur = counters(stats);
    const sample = {t: t, lat: {default: {}, fallback: {}}};
    if (prev) {
      const dt = (t - prev.t) / 1000;
      if (dt > 0) {
        sample.intake = intakeIncrease(cur, prev.c) / dt;
        sample.completions = increase(cur.processed, prev.c.processed) / dt;
        const r = increase(cur.retries, prev.c.retries);
        if (r !== null) sample.retryRate = r / dt;
        const u = increase(cur.unknown, prev.c.unknown);
        if (u !== null) sample.unknownRate = u / dt;
      }
    }
    prev = {t: t, c: cur};

    const q = stats.queue || {};
    sample.pending = q.pending;
    sample.delayed = q.delayed;
    sample.inFlight = q.inFlight;
    sample.rejected = q.rejected;

    // backlog: every api's, against every api's bound
    let backlog = null, limit = null;
    if (Array.isArray(stats.apis)) {
      backlog = 0;
      for (const a of stats.apis) {
        backlog += num(a.cacheBacklog);
        if (isNum(a.backlogLimit)) limit = (limit || 0) + a.backlogLimit;
      }
    } else if (stats.api && isNum(stats.api.cacheBacklog)) {
      backlog = stats.api.cacheBacklog;
      if (isNum(stats.api.backlogLimit)) limit = stats.api.backlogLimit;
    }
    sample.backlog = backlog;
    sample.backlogLimit = limit;

    // latency: differences of the histograms over the window
    const snap = {t: t, api: apiHistograms(stats), calls: callHistograms(stats)};
    snaps.push(snap);
    const base = windowBase(t);
    const apiAll = sumMap(snap.api);
    const apiWin = base && base !== snap ? windowHist(snap.api, base.api) : null;
    sample.apiP50 = quantile(0.5, apiWin);
    sample.apiP99 = quantile(0.99, apiWin);
    const procAll = {}, procWin = {};
    for (const p of PROCESSORS) {
      const h = snap.calls.get(p) || null;
      procAll[p] = h;
      if (h && base && base !== snap && base.calls.has(p)) procWin[p] = histDelta(h, base.calls.get(p)).hist;
      sample.lat[p] = {p50: quantile(0.5, procWin[p]), p99: quantile(0.99, procWin[p])};
    }
    samples.push(sample);
    trim();

    render(stats, sample, apiAll, procAll, t);
    drawCharts();
  }

  // ----------------------------------------------------------------- render

  function render(stats, sample, apiAll, procAll, now) {
    const q = stats.queue || {};
    const c = stats.consumer || {};
    const w = c.workers || {};
    const p = stats.processed || {};

    setMetric("rate.intake", sample.intake, fmtRate);
    setMetric("rate.completions", sample.completions, fmtRate);
    for (const k of ["pending", "delayed", "inFlight", "rejected", "requeued", "staleRequeues", "duplicates",
                     "lateCompletions", "expiredDuplicates", "retentionSeconds"]) {
      setMetric("queue." + k, q[k]);
    }
    let answered202 = null;
    if (Array.isArray(stats.apis)) answered202 = stats.apis.reduce((n, a) => n + num(a.answers && a.answers["202"]), 0);
    else if (acceptedSeen.size) answered202 = [...acceptedSeen.values()].reduce((n, v) => n + v, 0);
    setMetric("apis.answers.202", answered202);
    setMetric("apis.cacheBacklog", sample.backlog);
    setMetric("apis.backlogLimit", sample.backlogLimit);
    setMetric("latency.api.p50", sample.apiP50, fmtSeconds);
    setMetric("latency.api.p99", sample.apiP99, fmtSeconds);
    setMetric("latency.api.p50.all", quantile(0.5, apiAll), fmtSeconds);
    setMetric("latency.api.p99.all", quantile(0.99, apiAll), fmtSeconds);

    setMetric("consumer.alive", c.alive);
    setText("consumer.routing", c.routing);
    setText("api.instance", stats.api && stats.api.instance);
    setMetric("consumer.retries", c.retries);
    setMetric("consumer.unknownOutcomes", c.unknownOutcomes);
    setMetric("consumer.unknownSettled", c.unknownSettled);
    for (const k of ["size", "running", "done", "failed", "timedOut"]) setMetric("consumer.workers." + k, w[k]);
    setText("consumer.publishedAt", c.publishedAt ? fmtAge(now - Date.parse(c.publishedAt)) : null);
    document.querySelectorAll('[data-metric="consumer.publishedAt"]').forEach(el => { el.title = c.publishedAt || ""; });
    setMetric("cache.journalBytes", stats.cache ? stats.cache.journalBytes : null, fmtBytes);
    setMetric("dashboard.resets", resets);

    // KPI cards that turn amber when their figure is not zero
    document.querySelectorAll("[data-warn-metric]").forEach(el => {
      const el2 = el.querySelector('[data-metric="' + el.dataset.warnMetric + '"]');
      el.classList.toggle("warn", !!(el2 && Number(el2.dataset.value) > 0));
    });

    // processors: health, counts, amounts, shares, latency, call outcomes
    const totalCount = PROCESSORS.reduce((n, k) => n + num(p[k] && p[k].totalRequests), 0);
    const totalAmount = PROCESSORS.reduce((n, k) => n + num(p[k] && p[k].totalAmount), 0);
    setMetric("processed.totalRequests", totalCount);
    setMetric("processed.totalAmount", Math.round(totalAmount * 100) / 100, fmtMoney);
    for (const name of PROCESSORS) {
      const h = (c.health || {})[name];
      const pill = document.querySelector('[data-metric="consumer.health.' + name + '.status"]');
      let label = "unknown", cls = "pill-wait";
      if (h) {
        label = h.failing ? "FAILING" : "UP";
        cls = h.failing ? "pill-bad" : "pill-ok";
      }
      if (pill) {
        pill.textContent = label;
        pill.dataset.value = h ? String(!!h.failing) : "";
        pill.className = "pill " + cls;
      }
      setMetric("consumer.health." + name + ".failing", h ? h.failing : null, v => String(v));
      setMetric("consumer.health." + name + ".minResponseTime", h ? h.minResponseTime : null);
      setText("consumer.health." + name + ".checkedAt", h ? h.checkedAt : null);
      setText("consumer.health." + name + ".age",
              h && h.checkedAt ? "(" + fmtAge(now - Date.parse(h.checkedAt)) + ")" : "");
      const totals = p[name] || {};
      setMetric("processed." + name + ".totalRequests", totals.totalRequests);
      setMetric("processed." + name + ".totalAmount", totals.totalAmount, fmtMoney);
      const shareCount = totalCount > 0 ? num(totals.totalRequests) / totalCount : null;
      const shareAmount = totalAmount > 0 ? num(totals.totalAmount) / totalAmount : null;
      setMetric("share.count." + name, shareCount, fmtPct);
      setMetric("share.amount." + name, shareAmount, fmtPct);
      const barC = document.querySelector('[data-share-bar="count.' + name + '"]');
      const barA = document.querySelector('[data-share-bar="amount.' + name + '"]');
      if (barC) barC.style.width = ((shareCount || 0) * 100).toFixed(1) + "%";
      if (barA) barA.style.width = ((shareAmount || 0) * 100).toFixed(1) + "%";
      setMetric("latency." + name + ".p50", sample.lat[name].p50, fmtSeconds);
      setMetric("latency." + name + ".p99", sample.lat[name].p99, fmtSeconds);
      setMetric("latency." + name + ".p50.all", quantile(0.5, procAll[name]), fmtSeconds);
      setMetric("latency." + name + ".p99.all", quantile(0.99, procAll[name]), fmtSeconds);
      const outcomes = c.calls && c.calls[name] && c.calls[name].outcomes;
      const outEl = document.querySelector('[data-outcomes="' + name + '"]');
      if (outEl) {
        const parts = outcomes ? Object.keys(outcomes).sort().map(k => k + " " + fmtInt(outcomes[k])) : [];
        const text = parts.length ? parts.join(" · ") : "–";
        if (outEl.textContent !== text) outEl.textContent = text;
      }
    }

    renderApis(stats, now);
    renderRestarts(stats.restarts || {});
  }

  function cell(text, cls, metric, value) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (metric) { td.dataset.metric = metric; td.dataset.value = value === undefined || value === null ? "" : String(value); }
    return td;
  }

  function renderApis(stats, now) {
    const body = document.querySelector("#apis-table tbody");
    const rows = [];
    if (Array.isArray(stats.apis)) {
      for (const a of stats.apis) {
        const answers = a.answers || {};
        let errors = 0;
        for (const k in answers) if (k !== "202") errors += num(answers[k]);
        const tr = document.createElement("tr");
        const base = "apis." + a.instance;
        tr.append(
          cell(a.instance),
          cell(fmtInt(answers["202"]), "num", base + ".answers.202", answers["202"]),
          cell(fmtInt(errors), "num", base + ".errors", errors),
          cell(isHist(a.seconds) ? fmtSeconds(quantile(0.5, a.seconds)) + " / " + fmtSeconds(quantile(0.99, a.seconds)) : "–", "num"),
          cell(fmtInt(a.spoolPending), "num", base + ".spoolPending", a.spoolPending),
          cell(fmtInt(a.cacheBacklog) + " / " + fmtInt(a.backlogLimit), "num", base + ".cacheBacklog", a.cacheBacklog),
          cell(a.cacheConnected ? "connected" : "DISCONNECTED", a.cacheConnected ? "" : "error-text"),
          cell(a.publishedAt ? fmtAge(now - Date.parse(a.publishedAt)) : "–", "muted"));
        rows.push(tr);
      }
    } else if (stats.api) {
      const a = stats.api;
      const tr = document.createElement("tr");
      tr.append(cell(String(a.instance)), cell(fmtInt(a.accepted), "num"),
                cell(fmtInt(num(a.rejected) + num(a.refused)), "num"), cell("–", "num"),
                cell(fmtInt(a.spoolPending), "num"), cell(fmtInt(a.cacheBacklog), "num"),
                cell(a.cacheConnected ? "connected" : "DISCONNECTED", a.cacheConnected ? "" : "error-text"),
                cell("this answer", "muted"));
      rows.push(tr);
    }
    if (!rows.length) return;
    body.replaceChildren(...rows);
  }

  function renderRestarts(restarts) {
    const ul = document.getElementById("restarts");
    const names = Object.keys(restarts).sort();
    let total = 0;
    const items = names.map(n => {
      total += num(restarts[n]);
      const li = document.createElement("li");
      li.textContent = n + " " + fmtInt(restarts[n]);
      li.dataset.metric = "restarts." + n;
      li.dataset.value = String(restarts[n]);
      if (restarts[n] > 0) li.className = "hot";
      return li;
    });
    setMetric("restarts.total", total);
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "none counted (not under the local supervisor)";
      items.push(li);
    }
    ul.replaceChildren(...items);
  }

  function showStatus() {
    const el = document.getElementById("status");
    const age = lastOk ? Date.now() - lastOk : null;
    let label, cls, state;
    if (!lastOk && !lastError) { label = "connecting…"; cls = "pill-wait"; state = "connecting"; }
    else if (lastError && (age === null || age > STALE_MS)) {
      label = "stale · " + lastError; cls = "pill-bad"; state = "stale";
    } else if (lastError) { label = "retrying · " + lastError; cls = "pill-warn"; state = "error"; }
    else if (age > STALE_MS) { label = "stale"; cls = "pill-warn"; state = "stale"; }
    else { label = "live"; cls = "pill-ok"; state = "live"; }
    el.textContent = label;
    el.className = "pill " + cls;
    el.dataset.state = state;
    el.title = failures ? failures + " failed poll(s) in a row" : "";
    document.getElementById("updated-ago").textContent = lastOk ? fmtAge(age) + " · " + fmtTime(lastOk) : "never";
  }

  // ----------------------------------------------------------------- lookup

  const lookup = {
    id: null, timer: null, seq: 0, timeline: [],
    form: document.getElementById("lookup-form"),
    input: document.getElementById("lookup-id"),
    result: document.getElementById("lookup-result"),
    stateEl: document.getElementById("lookup-state"),
    idEl: document.getElementById("lookup-shown-id"),
    errorEl: document.getElementById("lookup-error"),
    fields: document.getElementById("lookup-fields"),
    timelineEl: document.getElementById("lookup-timeline"),
    requeue: document.getElementById("lookup-requeue"),
    requeueAnswer: document.getElementById("lookup-requeue-answer"),
  };
  const FIELD_ORDER = ["correlationId", "state", "amount", "attempts", "processor", "requestedAt", "reason"];
  const STATE_CLASS = {accepted: "pill-info", pending: "pill-info", processing: "pill-warn",
                       processed: "pill-ok", rejected: "pill-bad", "not found": "pill-wait", error: "pill-bad"};

  function paymentUrl(id) { return "/payments/" + encodeURIComponent(id); }

  function watch(id) {
    lookup.id = id;
    lookup.seq++;
    lookup.timeline = [];
    lookup.timelineEl.replaceChildren();
    lookup.requeueAnswer.hidden = true;
    lookup.result.hidden = false;
    lookup.idEl.textContent = id;
    if (lookup.timer) clearTimeout(lookup.timer);
    refreshLookup(lookup.seq);
  }

  async function refreshLookup(seq) {
    if (seq !== lookup.seq || !lookup.id) return;
    const id = lookup.id;
    let state, body = null, error = "";
    try {
      const r = await fetchJson(paymentUrl(id));
      body = r.body;
      if (r.status === 200 && body && body.state) state = body.state;
      else if (r.status === 404) { state = "not found"; error = (body && body.error) || "404 not found"; }
      else { state = "error"; error = "HTTP " + r.status + ((body && body.error) ? ": " + body.error : ""); }
    } catch (e) {
      state = "error";
      error = e && e.name === "AbortError" ? "timed out" : String(e && e.message || e);
    }
    if (seq !== lookup.seq) return;   // the operator looked up another id meanwhile
    showLookup(state, state === "not found" || state === "error" ? null : body, error);
    lookup.timer = setTimeout(() => refreshLookup(seq), POLL_MS);
  }

  function showLookup(state, body, error) {
    lookup.stateEl.textContent = state;
    lookup.stateEl.className = "pill " + (STATE_CLASS[state] || "pill-wait");
    lookup.stateEl.dataset.value = state;
    lookup.errorEl.hidden = !error;
    lookup.errorEl.textContent = error || "";
    const rows = [];
    if (body) {
      const keys = FIELD_ORDER.filter(k => k in body).concat(Object.keys(body).filter(k => !FIELD_ORDER.includes(k)));
      for (const k of keys) {
        const dt = document.createElement("dt");
        dt.textContent = k;
        const dd = document.createElement("dd");
        const v = body[k];
        dd.textContent = k === "amount" && isNum(v) ? fmtMoney(v)
          : (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v));
        dd.dataset.field = k;
        dd.dataset.value = v !== null && typeof v === "object" ? JSON.stringify(v) : String(v);
        rows.push(dt, dd);
      }
    }
    lookup.fields.replaceChildren(...rows);
    lookup.requeue.hidden = state !== "rejected";
    const last = lookup.timeline[lookup.timeline.length - 1];
    if (!last || last.state !== state) {
      addTimeline(state, state + (body && body.processor && (state === "processed" || state === "rejected")
        ? " at " + body.processor : ""));
    }
  }

  // One observed state of the watched payment, with the time it was seen.
  function addTimeline(state, text) {
    const entry = {t: Date.now(), state: state};
    lookup.timeline.push(entry);
    const li = document.createElement("li");
    li.dataset.state = state;
    const time = document.createElement("time");
    time.textContent = fmtTime(entry.t);
    const what = document.createElement("span");
    what.textContent = text;
    li.append(time, what);
    lookup.timelineEl.append(li);
    while (lookup.timelineEl.children.length > 30) {
      lookup.timelineEl.firstElementChild.remove();
      lookup.timeline.shift();
    }
  }

  lookup.form.addEventListener("submit", ev => {
    ev.preventDefault();
    const id = lookup.input.value.trim();
    if (!id) return;
    if (history.replaceState) history.replaceState(null, "", "#payment=" + encodeURIComponent(id));
    watch(id);
  });

  lookup.requeue.addEventListener("click", async () => {
    if (!lookup.id) return;
    lookup.requeue.disabled = true;
    try {
      const r = await fetchJson(paymentUrl(lookup.id) + "/requeue", {method: "POST"});
      lookup.requeueAnswer.hidden = false;
      lookup.requeueAnswer.textContent = r.status === 202
        ? "requeued: " + ((r.body && r.body.state) || "pending")
        : "HTTP " + r.status + ": " + ((r.body && r.body.error) || "refused");
      if (r.status === 202) {
        const now = (r.body && r.body.state) || "pending";
        addTimeline(now, now + " (requeued by this page)");
      }
    } catch (e) {
      lookup.requeueAnswer.hidden = false;
      lookup.requeueAnswer.textContent = "requeue failed: " + String(e && e.message || e);
    } finally {
      lookup.requeue.disabled = false;
    }
    lookup.seq++;
    if (lookup.timer) clearTimeout(lookup.timer);
    refreshLookup(lookup.seq);
  });

  // a link to #payment=<id> opens with that payment watched
  const fromHash = /^#payment=(.+)$/.exec(location.hash);
  if (fromHash) {
    lookup.input.value = decodeURIComponent(fromHash[1]);
    watch(lookup.input.value);
  }

  // ------------------------------------------------------------------ start

  setInterval(showStatus, 500);
  if (window.ResizeObserver) new ResizeObserver(() => drawCharts()).observe(document.querySelector(".charts"));
  else window.addEventListener("resize", drawCharts);
  drawCharts();
  poll();
})();
