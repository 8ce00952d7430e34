// The Granary dashboard: draws the cluster from the ClusterStatus that /api/events
// pushes once a second (granary_proto::status, serialized by serde). Every counter in
// it is cumulative, so rates come from the difference between two reports of the same
// silo (same address and generation) divided by the silo's own uptime difference.
// Plain JavaScript, no dependencies: this file is compiled into the silo binary.
'use strict';

// granary_proto::status::LATENCY_BOUNDS_US: upper bounds of the latency buckets, in µs;
// one more (overflow) bucket follows them.
const LATENCY_BOUNDS_US = [
  16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072,
  262144, 524288, 1048576, 2097152, 4194304, 8388608, 16777216,
];
// How much history the charts keep and show.
const HISTORY_MS = 5 * 60 * 1000;
// With no report for this long, the page says its data is stale.
const STALE_MS = 5000;
// Rates need reports at least this far apart (the page's embedded report and the first
// pushed one are only milliseconds apart).
const MIN_INTERVAL_MS = 500;
// Events shown in the feed, newest first.
const FEED_LENGTH = 120;
// Hottest grains listed (each silo reports its top ten).
const HOT_SHOWN = 8;
const PALETTE = ['#3d6fa8', '#d4812f', '#4d9a6b', '#8e5ba8', '#c4544f', '#3f9aa3', '#9a8a35', '#6b6b6b'];
const ALL = 'all types';

const state = {
  prev: new Map(),      // silo key -> the SiloStatus its rates are measured against
  figures: new Map(),   // silo key -> its last measured figures (see siloFigures)
  history: [],          // { t, rate: {type: msg/s}, p99: {type: µs|null} }
  colors: new Map(),    // grain type -> colour
  seenEvents: new Set(),
  lastReport: 0,
  first: true,
};

// ---- small helpers ------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const svgNS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const node = document.createElementNS(svgNS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

const $ = (id) => document.getElementById(id);
const siloKey = (id) => `${id.tcp}#${id.generation}`;
const lower = (s) => String(s).toLowerCase();
const DASH = '—';

function fmtInt(n) {
  return Math.round(n).toLocaleString('en-US');
}

function fmtRate(r) {
  if (r === null || r === undefined || Number.isNaN(r)) return DASH;
  if (r === 0) return '0';
  const tenths = r.toFixed(1);
  if (r < 10 && tenths !== '10.0') return tenths;
  return fmtInt(r);
}

function fmtUs(us) {
  if (us === null || us === undefined) return DASH;
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 10000) return `${(us / 1000).toFixed(1)} ms`;
  if (us < 1e6) return `${Math.round(us / 1000)} ms`;
  return `${(us / 1e6).toFixed(1)} s`;
}

// A tick of the log latency axis: 10 µs, 100 µs, 1 ms … 10 s.
function fmtTickUs(us) {
  if (us < 1000) return `${us} µs`;
  if (us < 1e6) return `${us / 1000} ms`;
  return `${us / 1e6} s`;
}

function fmtBytes(b) {
  if (!b) return DASH;
  const mib = b / (1024 * 1024);
  if (mib < 1024) return `${mib < 100 ? mib.toFixed(1) : Math.round(mib)} MiB`;
  return `${(mib / 1024).toFixed(2)} GiB`;
}

function fmtUptime(ms) {
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const two = (n) => String(n).padStart(2, '0');
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${two(m)}m`;
  if (m > 0) return `${m}m ${two(s)}s`;
  return `${s}s`;
}

function fmtClock(unixMs) {
  const t = new Date(unixMs);
  const two = (n) => String(n).padStart(2, '0');
  return `${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}`;
}

function colorOf(type) {
  if (type === ALL) return '#1f2d3d';
  if (!state.colors.has(type)) state.colors.set(type, PALETTE[state.colors.size % PALETTE.length]);
  return state.colors.get(type);
}

// ---- latency buckets (LatencyBuckets::since and ::quantile) ---------------------------

function bucketDelta(now, before) {
  return now.counts.map((c, i) => Math.max(0, c - ((before && before.counts[i]) || 0)));
}

function addInto(sum, counts) {
  counts.forEach((c, i) => { sum[i] = (sum[i] || 0) + c; });
  return sum;
}

// The upper bound (µs) of the bucket holding quantile q; null when nothing was counted.
function quantile(counts, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < counts.length; i += 1) {
    seen += counts[i];
    if (seen >= rank) {
      return i < LATENCY_BOUNDS_US.length ? LATENCY_BOUNDS_US[i] : LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.length - 1] * 2;
    }
  }
  return null;
}

// ---- one report -----------------------------------------------------------------------

// Rates and interval figures of one silo against its previous report; `fresh` when
// measured now, else the last ones (or none) and the previous report stays the base.
function siloFigures(silo) {
  const key = siloKey(silo.id);
  const before = state.prev.get(key);
  const dtMs = before ? silo.uptime_ms - before.uptime_ms : 0;
  if (before && dtMs < MIN_INTERVAL_MS) {
    return { ...(state.figures.get(key) || { cpu: null, rate: null, types: new Map() }), fresh: false, base: before };
  }
  const figures = { cpu: null, rate: null, types: new Map(), fresh: false, base: silo };
  if (!before) return figures;
  figures.fresh = true;
  figures.cpu = (100 * Math.max(0, silo.cpu_ms - before.cpu_ms)) / dtMs;
  figures.rate = 0;
  const earlier = new Map(before.grain_types.map((t) => [t.grain_type, t]));
  for (const t of silo.grain_types) {
    const b = earlier.get(t.grain_type);
    const rate = (1000 * Math.max(0, t.messages - (b ? b.messages : 0))) / dtMs;
    figures.rate += rate;
    figures.types.set(t.grain_type, { rate, buckets: bucketDelta(t.latency, b && b.latency) });
  }
  return figures;
}

function onStatus(status) {
  const now = Date.now();
  state.lastReport = now;
  const reports = new Map(status.silos.map((s) => [siloKey(s.id), s]));
  const figures = new Map(status.silos.map((s) => [siloKey(s.id), siloFigures(s)]));
  const measured = [...figures.values()].some((f) => f.rate !== null);
  const fresh = [...figures.values()].some((f) => f.fresh);

  // Per grain type, over the whole cluster.
  const types = new Map();
  const allBuckets = [];
  for (const s of status.silos) {
    const f = figures.get(siloKey(s.id));
    for (const t of s.grain_types) {
      const agg = types.get(t.grain_type) || {
        name: t.grain_type, activations: 0, queue: 0, messages: 0, rate: null, buckets: [],
      };
      agg.activations += t.activations;
      agg.queue += t.queue_depth;
      agg.messages += t.messages;
      const ft = f.types.get(t.grain_type);
      if (ft) {
        agg.rate = (agg.rate || 0) + ft.rate;
        addInto(agg.buckets, ft.buckets);
        addInto(allBuckets, ft.buckets);
      }
      types.set(t.grain_type, agg);
    }
  }
  for (const agg of types.values()) {
    agg.p99 = quantile(agg.buckets, 0.99);
    if (measured && agg.rate === null) agg.rate = 0;
    colorOf(agg.name);
  }
  const totalRate = measured ? [...types.values()].reduce((a, t) => a + (t.rate || 0), 0) : null;
  const totalP99 = quantile(allBuckets, 0.99);

  if (fresh) {
    const point = { t: now, rate: { [ALL]: totalRate }, p99: { [ALL]: totalP99 } };
    for (const agg of types.values()) {
      point.rate[agg.name] = agg.rate;
      point.p99[agg.name] = agg.p99;
    }
    state.history.push(point);
    while (state.history.length && state.history[0].t < now - HISTORY_MS) state.history.shift();
  }

  renderHeader(status, types, totalRate, totalP99);
  renderSilos(status, reports, figures);
  renderTypes(types);
  renderHot(status);
  renderEvents(status.events);
  renderCharts();
  state.prev = new Map([...figures.entries()].map(([key, f]) => [key, f.base]));
  state.figures = figures;
  state.first = false;
  $('problem').hidden = true;
}

// ---- rendering ------------------------------------------------------------------------

function renderHeader(status, types, totalRate, totalP99) {
  $('master').textContent = `master ${status.master.tcp}`;
  const dead = status.members.filter((m) => m.state === 'Dead').length;
  const live = status.members.filter((m) => m.state === 'Active').length;
  const activations = [...types.values()].reduce((a, t) => a + t.activations, 0);
  const item = (label, value, extra) => [el('dt', {}, label), el('dd', extra || {}, value)];
  $('totals').replaceChildren(
    ...item('silos', dead ? `${live} live · ${dead} dead` : `${live} live`, dead ? { class: 'bad' } : {}),
    ...item('activations', fmtInt(activations)),
    ...item('msg/s', fmtRate(totalRate)),
    ...item('p99', fmtUs(totalP99)),
  );
  $('rate-now').textContent = totalRate === null ? '' : `now ${fmtRate(totalRate)}`;
  $('p99-now').textContent = totalP99 === null ? '' : `now ${fmtUs(totalP99)}`;
}

function pill(word, kind) {
  return el('span', { class: `pill ${kind || word}` }, word);
}

// What the silos table says in place of the figures of a silo that is gone.
const GONE = {
  dead: 'missed its heartbeats; its grains move to live slaves',
  left: 'left the cluster',
};

function renderSilos(status, reports, figures) {
  const unanswered = new Map(status.unanswered.map(([id, why]) => [siloKey(id), why]));
  const rows = new Map();
  for (const m of status.members) rows.set(siloKey(m.id), { id: m.id, role: m.role, member: m.state });
  for (const s of status.silos) {
    const row = rows.get(siloKey(s.id)) || { id: s.id, role: s.role, member: null };
    rows.set(siloKey(s.id), row);
  }
  const gone = (r) => r.member === 'Dead' || (r.member === 'Leaving' && !reports.has(siloKey(r.id)));
  const order = (r) => (r.role === 'Master' ? 0 : gone(r) ? 2 : 1);
  const sorted = [...rows.entries()].sort(([, a], [, b]) => order(a) - order(b) || a.id.tcp.localeCompare(b.id.tcp, 'en', { numeric: true }));
  const body = sorted.map(([key, row]) => {
    const report = reports.get(key);
    const f = figures.get(key);
    let word;
    if (row.member === 'Dead') word = 'dead';
    else if (report) word = lower(report.state);
    else if (row.member === 'Leaving') word = 'left';
    else if (unanswered.has(key)) word = 'no answer';
    else word = lower(row.member || 'unknown');
    const dataState = word.replace(' ', '-');
    const title = `TCP ${row.id.tcp} · UDP ${row.id.udp} · generation ${row.id.generation}` +
      (unanswered.has(key) ? ` · ${unanswered.get(key)}` : '');
    const cells = report
      ? [
        el('td', { class: 'num' }, fmtUptime(report.uptime_ms)),
        el('td', { class: 'num' }, fmtInt(report.activations)),
        el('td', { class: 'num' }, fmtInt(report.queue_depth)),
        el('td', { class: 'num' }, fmtRate(f && f.rate)),
        el('td', { class: 'num', title: 'several silos in one process report the same process' }, f && f.cpu !== null ? `${f.cpu.toFixed(1)} %` : DASH),
        el('td', { class: 'num' }, fmtBytes(report.rss_bytes)),
      ]
      : [el('td', { class: 'num muted', colspan: 6 }, GONE[word] || unanswered.get(key) || 'no report')];
    return el('tr', { 'data-silo': row.id.tcp, 'data-state': dataState, class: `state-${dataState}`, title },
      el('td', {}, el('span', { class: `role ${lower(row.role)}` }, lower(row.role))),
      el('td', { class: 'addr' }, row.id.tcp),
      el('td', {}, pill(word, dataState)),
      cells);
  });
  $('silos').replaceChildren(...body);
  const dead = [...rows.values()].filter((r) => r.member === 'Dead').length;
  const left = [...rows.values()].filter((r) => gone(r)).length - dead;
  $('silo-count').textContent = `${rows.size - dead - left} live${dead ? `, ${dead} dead` : ''}${left ? `, ${left} left` : ''}`;
}

function renderTypes(types) {
  const sorted = [...types.values()].sort((a, b) => a.name.localeCompare(b.name));
  if (!sorted.length) {
    $('types').replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: 6 }, 'No grain type has been called yet.')));
    return;
  }
  $('types').replaceChildren(...sorted.map((t) => el('tr', { 'data-grain-type': t.name },
    el('td', { class: 'fill', title: t.name }, el('span', { class: 'swatch', style: `background:${colorOf(t.name)}` }), el('span', { class: 'type' }, t.name)),
    el('td', { class: 'num' }, fmtInt(t.activations)),
    el('td', { class: 'num' }, fmtInt(t.queue)),
    el('td', { class: 'num' }, fmtRate(t.rate)),
    el('td', { class: 'num', title: t.p99 === null ? 'no message in the last interval' : `≤ ${t.p99} µs` }, fmtUs(t.p99)),
    el('td', { class: 'num muted' }, fmtInt(t.messages)))));
}

function renderHot(status) {
  const hot = status.silos.flatMap((s) => s.hot_grains.map((g) => ({ ...g, silo: s.id.tcp })));
  hot.sort((a, b) => b.rate_milli - a.rate_milli || b.queue_depth - a.queue_depth || b.messages - a.messages);
  if (!hot.length) {
    $('hot').replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: 6 }, 'No grain is busy right now.')));
    return;
  }
  $('hot').replaceChildren(...hot.slice(0, HOT_SHOWN).map((g) => el('tr', {},
    el('td', { class: 'type' }, g.grain_type),
    el('td', { class: 'key fill', title: g.key }, g.key),
    el('td', { class: 'num' }, fmtRate(g.rate_milli / 1000)),
    el('td', { class: 'num' }, fmtInt(g.queue_depth)),
    el('td', { class: 'num' }, g.replicas),
    el('td', { class: 'addr muted' }, g.silo))));
}

const EVENT_WORDS = {
  Joined: 'joined', Left: 'left', Died: 'died', Fenced: 'fenced',
  MasterChanged: 'master changed', PlacementStorm: 'placement storm',
};

function renderEvents(events) {
  if (!events.length) {
    $('events').replaceChildren(el('li', { class: 'empty' }, 'Nothing has happened yet.'));
    return;
  }
  const items = events.slice(-FEED_LENGTH).reverse().map((e) => {
    const key = `${e.at_unix_ms}/${e.seq}/${e.kind}/${siloKey(e.silo)}`;
    const fresh = !state.first && !state.seenEvents.has(key);
    state.seenEvents.add(key);
    const word = EVENT_WORDS[e.kind] || lower(e.kind);
    // The silo's address is in its own column: the detail names it by address only.
    const full = `${e.silo.tcp}/udp:${e.silo.udp}#${e.silo.generation}`;
    const detail = e.detail.split(full).join(e.silo.tcp);
    return el('li', { class: fresh ? 'fresh' : null, 'data-kind': lower(e.kind) },
      el('time', { datetime: new Date(e.at_unix_ms).toISOString() }, fmtClock(e.at_unix_ms)),
      pill(word, `ev-${lower(e.kind)}`),
      el('span', { class: 'addr', title: full }, e.silo.tcp),
      el('p', { class: 'detail', title: e.detail }, detail));
  });
  $('events').replaceChildren(...items);
}

// ---- charts ---------------------------------------------------------------------------

// A round step that cuts 0..v into at most 4 parts.
function niceStep(v) {
  const raw = v / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

// Draws the history series `field` into the <svg> `id`: time on x (the last
// HISTORY_MS), linear or log10 y.
function drawChart(id, legendId, field, opts) {
  const node = $(id);
  const box = node.getBoundingClientRect();
  const W = Math.max(200, Math.round(box.width));
  const H = Math.max(100, Math.round(box.height));
  node.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const pad = { l: 58, r: 12, t: 10, b: 22 };
  const now = state.history.length ? state.history[state.history.length - 1].t : Date.now();
  const t0 = now - HISTORY_MS;
  const x = (t) => pad.l + ((t - t0) / HISTORY_MS) * (W - pad.l - pad.r);
  const names = [ALL, ...[...state.colors.keys()].sort()];
  const values = state.history.flatMap((p) => names.map((n) => p[field][n]).filter((v) => v !== null && v !== undefined));
  let y; let ticks; let { format } = opts;
  if (opts.log) {
    const lo = Math.min(10, ...values);
    const hi = Math.max(1000, ...values);
    const a = Math.floor(Math.log10(lo)); const b = Math.ceil(Math.log10(hi));
    y = (v) => H - pad.b - ((Math.log10(Math.max(v, 10 ** a)) - a) / (b - a)) * (H - pad.t - pad.b);
    ticks = []; for (let e = a; e <= b; e += 1) ticks.push(10 ** e);
  } else {
    const max = Math.max(...values, 0) * 1.05 || 1;
    const step = niceStep(max);
    const top = Math.ceil(max / step - 1e-9) * step;
    const digits = step >= 1 ? 0 : Math.min(3, String(Number(step.toPrecision(3))).split('.')[1].length);
    y = (v) => H - pad.b - (v / top) * (H - pad.t - pad.b);
    ticks = [];
    for (let i = 0; i * step <= top + step / 2; i += 1) ticks.push(i * step);
    format = (v) => (v === 0 ? '0' : digits ? v.toFixed(digits) : fmtInt(v));
  }
  const parts = [];
  for (const v of ticks) {
    parts.push(svg('line', { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: 'grid' }));
    const label = svg('text', { x: pad.l - 8, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' });
    label.textContent = format(v);
    parts.push(label);
  }
  for (let m = 0; m <= HISTORY_MS / 60000; m += 1) {
    const t = now - m * 60000;
    const label = svg('text', { x: x(t), y: H - 6, 'text-anchor': m === 0 ? 'end' : 'middle', class: 'tick' });
    label.textContent = m === 0 ? 'now' : `−${m} min`;
    parts.push(label);
    if (m > 0) parts.push(svg('line', { x1: x(t), x2: x(t), y1: pad.t, y2: H - pad.b, class: 'grid v' }));
  }
  for (const name of names) {
    // Split into runs of known values: an interval without messages has no p99.
    const runs = [];
    let run = [];
    for (const p of state.history) {
      const v = p[field][name];
      if (v === null || v === undefined) { if (run.length) runs.push(run); run = []; } else run.push([x(p.t), y(v)]);
    }
    if (run.length) runs.push(run);
    for (const r of runs) {
      const d = r.map(([px, py], i) => `${i ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`).join('');
      if (name === ALL && opts.area && r.length > 1) {
        const base = y(0);
        parts.push(svg('path', { d: `${d}L${r[r.length - 1][0].toFixed(1)},${base}L${r[0][0].toFixed(1)},${base}Z`, class: 'area' }));
      }
      const attrs = { d, class: name === ALL ? 'line all' : 'line', stroke: colorOf(name) };
      parts.push(svg('path', attrs));
      if (r.length === 1) parts.push(svg('circle', { cx: r[0][0], cy: r[0][1], r: 2, fill: colorOf(name) }));
    }
  }
  if (!state.history.length) {
    const wait = svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'waiting' });
    wait.textContent = 'waiting for a second report…';
    parts.push(wait);
  }
  node.replaceChildren(...parts);
  $(legendId).replaceChildren(...names.map((n) => el('span', { class: n === ALL ? 'key all' : 'key' },
    el('i', { style: `background:${colorOf(n)}` }), n)));
}

function renderCharts() {
  drawChart('rate-chart', 'rate-legend', 'rate', { area: true });
  drawChart('p99-chart', 'p99-legend', 'p99', { log: true, format: fmtTickUs });
}

// ---- wiring ---------------------------------------------------------------------------

function setConn(word, text) {
  $('conn').dataset.conn = word;
  $('conn-text').textContent = text || word;
}

function problem(text) {
  const p = $('problem');
  p.textContent = text;
  p.hidden = false;
}

// The page comes with the silo serving it and the cluster status of the moment it was
// served (the <script id="boot"> element): drawn at once, before the first push.
function boot() {
  let data = null;
  try {
    data = JSON.parse($('boot').textContent);
  } catch (e) {
    return;
  }
  if (!data) return;
  if (data.viewer && (data.viewer.role === 'Slave' || data.viewer.role === 'Standby')) {
    const v = $('viewer');
    const who = data.viewer.role === 'Slave' ? 'slave' : 'standby master candidate';
    v.textContent = `This page is served by ${who} ${data.viewer.id.tcp}, which asks the acting master for what it shows. ` +
      'Any silo given --http serves it.';
    v.hidden = false;
  }
  if (data.status) onStatus(data.status);
  if (data.unavailable) problem(`The cluster status is unavailable: ${data.unavailable}`);
}

function connect() {
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => setConn('live'));
  source.addEventListener('status', (ev) => {
    setConn('live');
    try {
      onStatus(JSON.parse(ev.data));
    } catch (e) {
      problem(`cannot show this report: ${e}`);
    }
  });
  source.addEventListener('unavailable', (ev) => {
    setConn('down', 'no data');
    problem(`The cluster status is unavailable: ${ev.data}`);
  });
  source.addEventListener('error', () => setConn('down', 'reconnecting…'));
}

setInterval(() => {
  if (state.lastReport && Date.now() - state.lastReport > STALE_MS && $('conn').dataset.conn === 'live') {
    setConn('stale', 'stale');
  }
}, 1000);
window.addEventListener('resize', renderCharts);
boot();
connect();
