// A small hand-written SVG line chart for time series with gaps, dropped intervals and marks.
// Drag across it (or pinch) to zoom; tap for the value at a time.
import { s } from './api.js';
import { t, tick, stamp } from './i18n.js';

const PL = 48, PR = 10, PT = 14, PB = 24;
const TICKS = [60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3, 172800e3, 604800e3];
let uid = 0;

/**
 * Lines of a series, as segments that break at gaps. Raw readings report by exception, so a
 * value holds until the next reading (a step), but at most `hold` ms, never into a dropped
 * interval, and never past `until`. A null value (bad quality) breaks the line. Buckets are
 * drawn at their middle, avg as the line and min..max as a band; a count of 0 breaks it.
 */
function segments(d) {
  const out = [];
  let cur = null;
  const dropped = d.dropped || [];
  if (d.kind === 'raw') {
    const pts = d.pts;
    const gaps = [];
    for (let i = 1; i < pts.length; i++) gaps.push(pts[i][0] - pts[i - 1][0]);
    gaps.sort((a, b) => a - b);
    const hold = Math.max(150e3, 3 * (gaps[gaps.length >> 1] || 0));
    const until = Math.min(d.until ?? d.to, Date.now());
    for (let i = 0; i < pts.length; i++) {
      const [ts, v] = pts[i];
      const next = pts[i + 1];
      if (v == null || !isFinite(v)) { cur = null; continue; }
      let end = next ? next[0] : Math.max(ts, until);
      let cont = !!next && next[1] != null;
      if (end - ts > hold) { end = ts + hold; cont = false; }
      for (const g of dropped) {
        const gf = +new Date(g.from);
        if (gf > ts && gf < end) { end = gf; cont = false; }
      }
      if (!cur) out.push(cur = { line: [] });
      cur.line.push([ts, v]);
      if (end > ts) cur.line.push([end, v]);
      if (!cont) cur = null;
    }
  } else {
    const w = d.w;
    for (const r of d.rows) {
      if (!r.count || r.avg == null) { cur = null; continue; }
      if (!cur) out.push(cur = { line: [], band: [] });
      const m = r.t + w / 2;
      cur.line.push([m, r.avg]);
      cur.band.push([m, r.min ?? r.avg, r.max ?? r.avg]);
    }
  }
  return out;
}

function niceStep(span, n) {
  const raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

/** Creates the chart in `host`; returns { set(data), zoom(from, to) }. */
export function chart(host, opts = {}) {
  const id = 'c' + ++uid;
  let data = null, segs = [], view = null, W = 0, H = 210;
  const svg = s('svg', { class: 'chart', 'data-testid': 'chart', role: 'img', height: H });
  host.append(svg);
  const local = (f, to) => { view = { from: f, to }; draw(); };
  const onZoom = opts.onZoom || local;

  function set(d) {
    data = d;
    segs = segments(d);
    view = { from: d.from, to: d.to };
    draw();
  }

  function draw() {
    W = Math.max(260, host.clientWidth || 340);
    H = W > 640 ? 300 : 210;
    svg.setAttribute('height', H);
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('width', W);
    svg.replaceChildren();
    if (!data) return;
    const { from, to } = view;
    const pw = W - PL - PR, ph = H - PT - PB;
    const x = (ts) => PL + ((ts - from) / (to - from)) * pw;
    // The value range of what is in view (a step's hold counts from where it starts).
    let lo = Infinity, hi = -Infinity;
    const inView = (a, b) => b[0] >= from && a[0] <= to;
    for (const g of segs) {
      const L = g.line;
      for (let i = 0; i < L.length; i++) {
        const a = L[i], b = L[i + 1] || a;
        if (!inView(a, b)) continue;
        lo = Math.min(lo, a[1], b[1]); hi = Math.max(hi, a[1], b[1]);
        if (g.band) for (const q of [g.band[i], g.band[i + 1] || g.band[i]]) { lo = Math.min(lo, q[1]); hi = Math.max(hi, q[2]); }
      }
    }
    const defs = s('defs', null,
      s('clipPath', { id: id + 'k' }, s('rect', { x: PL, y: 0, width: pw, height: H - PB })),
      s('pattern', { id: id + 'h', width: 6, height: 6, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
        s('rect', { width: 3, height: 6, class: 'hatch' })));
    svg.append(defs);
    const empty = lo === Infinity;
    if (empty) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { const m = Math.max(0.5, Math.abs(hi) * 0.02); lo -= m; hi += m; } else if (!empty) { const m = (hi - lo) * 0.06; lo -= m; hi += m; }
    const step = niceStep(hi - lo, 4);
    lo = Math.floor(lo / step) * step; hi = Math.ceil(hi / step) * step;
    const y = (v) => PT + (1 - (v - lo) / (hi - lo)) * ph;
    const dec = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const grid = s('g', { class: 'grid' });
    for (let v = lo; v <= hi + step / 2; v += step) {
      grid.append(s('line', { x1: PL, x2: W - PR, y1: y(v), y2: y(v) }),
        s('text', { x: PL - 5, y: y(v) + 4, 'text-anchor': 'end' }, v.toFixed(dec)));
    }
    // Time ticks at round local times.
    const span = to - from;
    const tstep = TICKS.find((q) => span / q <= Math.max(2, Math.floor(pw / 72))) || 604800e3;
    const tz = new Date(from).getTimezoneOffset() * 60e3;
    for (let ts = Math.ceil((from - tz) / tstep) * tstep + tz; ts <= to; ts += tstep) {
      const X = x(ts);
      grid.append(s('line', { x1: X, x2: X, y1: PT, y2: H - PB, class: 'v' }),
        s('text', { x: X, y: H - 7, 'text-anchor': X < PL + 20 ? 'start' : X > W - 30 ? 'end' : 'middle' }, tick(ts, tstep)));
    }
    svg.append(grid);
    if (data.unit) svg.append(s('text', { x: 4, y: 10, class: 'unit' }, data.unit));
    const plot = s('g', { 'clip-path': `url(#${id}k)` });
    for (const g of data.dropped || []) {
      const a = Math.max(x(+new Date(g.from)), PL - 1), b = Math.min(x(+new Date(g.to)), W - PR + 1);
      if (b < PL || a > W - PR) continue;
      plot.append(s('rect', { x: a, y: PT, width: Math.max(3, b - a), height: ph, fill: `url(#${id}h)`, class: 'dropped' },
        s('title', null, t('dropped', { n: g.readings ?? '?' }))));
    }
    for (const g of segs) {
      if (g.band && g.band.length > 1) {
        const top = g.band.map((q) => `${x(q[0]).toFixed(1)},${y(q[2]).toFixed(1)}`);
        const bot = g.band.map((q) => `${x(q[0]).toFixed(1)},${y(q[1]).toFixed(1)}`).reverse();
        plot.append(s('polygon', { points: top.concat(bot).join(' '), class: 'band' }));
      }
      const pts = thin(g.line, x, from, to);
      if (pts.length === 1) plot.append(s('circle', { cx: pts[0][0], cy: y(pts[0][1]), r: 2.5, class: 'dot' }));
      else if (pts.length) plot.append(s('path', { d: 'M' + pts.map((p) => `${p[0].toFixed(1)},${y(p[1]).toFixed(1)}`).join('L'), class: 'line' }));
    }
    for (const m of data.marks || []) {
      const X = x(m.t);
      if (X < PL || X > W - PR) continue;
      plot.append(s('line', { x1: X, x2: X, y1: PT, y2: H - PB, class: 'mark' }),
        s('text', { x: X > W - 60 ? X - 3 : X + 3, y: PT + 10, class: 'mark-t', 'text-anchor': X > W - 60 ? 'end' : 'start' }, m.label));
    }
    svg.append(plot);
    if (empty) svg.append(s('text', { x: PL + pw / 2, y: PT + ph / 2, 'text-anchor': 'middle', class: 'empty' }, t('no_data')));
    const sel = s('rect', { y: PT, height: ph, class: 'sel', visibility: 'hidden' });
    const read = s('g', { class: 'read', visibility: 'hidden' });
    svg.append(sel, read);
    svg._ctx = { x, y, from, to, pw, sel, read };
  }

  /** The points of a line in view, at most about four per pixel column (first, min, max, last). */
  function thin(line, x, from, to) {
    const vis = [];
    for (let i = 0; i < line.length; i++) {
      const a = line[i], prev = line[i - 1], next = line[i + 1];
      if ((a[0] >= from && a[0] <= to) || (prev && prev[0] <= to && a[0] >= from) || (next && next[0] >= from && a[0] <= to)) vis.push(a);
    }
    if (vis.length < 4 * (W - PL - PR)) return vis.map((p) => [x(p[0]), p[1]]);
    const out = [];
    let col = null, first, mn, mx, last;
    const flush = () => {
      if (col == null) return;
      const set = [first, mn, mx, last].sort((a, b) => a[0] - b[0]);
      for (const p of set) if (out[out.length - 1] !== p) out.push(p);
    };
    for (const p of vis) {
      const c = Math.floor(x(p[0]));
      if (c !== col) { flush(); col = c; first = mn = mx = last = p; continue; }
      if (p[1] < mn[1]) mn = p;
      if (p[1] > mx[1]) mx = p;
      last = p;
    }
    flush();
    return out.map((p) => [x(p[0]), p[1]]);
  }

  function readout(X) {
    const c = svg._ctx;
    if (!c) return;
    const ts = c.from + ((X - PL) / c.pw) * (c.to - c.from);
    let best = null;
    for (const g of segs) for (const p of g.line) if (!best || Math.abs(p[0] - ts) < Math.abs(best[0] - ts)) best = p;
    c.read.replaceChildren();
    if (!best || best[0] < c.from || best[0] > c.to) { c.read.setAttribute('visibility', 'hidden'); return; }
    const bx = c.x(best[0]), by = c.y(best[1]);
    const label = `${(opts.fmt || String)(best[1])}${data.unit ? ' ' + data.unit : ''}  ${stamp(best[0])}`;
    const tw = label.length * 6.6 + 12, left = bx + tw + 8 > W ? bx - tw - 6 : bx + 6;
    c.read.append(s('line', { x1: bx, x2: bx, y1: PT, y2: H - PB }), s('circle', { cx: bx, cy: by, r: 4 }),
      s('rect', { x: left, y: PT, width: tw, height: 20, rx: 4 }), s('text', { x: left + 6, y: PT + 14 }, label));
    c.read.setAttribute('visibility', 'visible');
  }

  // Gestures: one finger or the mouse drags a range; two fingers pinch; a tap reads a value.
  const ptrs = new Map();
  let drag = null, pinch = null, raf = 0;
  const xOf = (e) => { const r = svg.getBoundingClientRect(); return ((e.clientX - r.left) * W) / (r.width || W); };
  const tOf = (X) => { const c = svg._ctx; return c.from + ((X - PL) / c.pw) * (c.to - c.from); };
  svg.addEventListener('pointerdown', (e) => {
    if (!svg._ctx) return;
    try { svg.setPointerCapture(e.pointerId); } catch (_) { /* synthetic or gone */ }
    ptrs.set(e.pointerId, xOf(e));
    if (ptrs.size === 1) drag = { x0: xOf(e), x1: xOf(e), moved: false };
    else if (ptrs.size === 2) {
      drag = null;
      svg._ctx.sel.setAttribute('visibility', 'hidden');
      const [a, b] = [...ptrs.values()];
      pinch = { d0: Math.max(20, Math.abs(a - b)), t0: tOf((a + b) / 2), span: view.to - view.from };
    }
  });
  svg.addEventListener('pointermove', (e) => {
    if (!ptrs.has(e.pointerId)) return;
    ptrs.set(e.pointerId, xOf(e));
    if (pinch && ptrs.size === 2) {
      const [a, b] = [...ptrs.values()];
      const span = Math.max(60e3, (pinch.span * pinch.d0) / Math.max(20, Math.abs(a - b)));
      const c = (a + b) / 2, f = pinch.t0 - ((c - PL) / (W - PL - PR)) * span;
      view = { from: f, to: f + span };
      cancelAnimationFrame(raf);
      raf = requestAnimationFrame(draw);
    } else if (drag) {
      drag.x1 = xOf(e);
      if (Math.abs(drag.x1 - drag.x0) > 8) drag.moved = true;
      if (drag.moved) {
        const c = svg._ctx, a = Math.max(PL, Math.min(drag.x0, drag.x1)), b = Math.min(W - PR, Math.max(drag.x0, drag.x1));
        c.sel.setAttribute('x', a); c.sel.setAttribute('width', Math.max(0, b - a)); c.sel.setAttribute('visibility', 'visible');
      }
    }
  });
  const end = (e) => {
    if (!ptrs.has(e.pointerId)) return;
    ptrs.delete(e.pointerId);
    if (pinch) {
      if (ptrs.size < 2) { pinch = null; drag = null; onZoom(view.from, view.to); }
      return;
    }
    if (!drag) return;
    const d = drag;
    drag = null;
    svg._ctx.sel.setAttribute('visibility', 'hidden');
    if (e.type === 'pointercancel') return;
    if (d.moved && Math.abs(d.x1 - d.x0) > 12) {
      const a = tOf(Math.max(PL, Math.min(d.x0, d.x1))), b = tOf(Math.min(W - PR, Math.max(d.x0, d.x1)));
      if (b - a >= 60e3) onZoom(a, b); else onZoom(a - 30e3 + (b - a) / 2, a + 30e3 + (b - a) / 2);
    } else if (!d.moved) readout(d.x0);
  };
  svg.addEventListener('pointerup', end);
  svg.addEventListener('pointercancel', end);
  if (window.ResizeObserver) {
    let last = 0;
    new ResizeObserver(() => { const w = host.clientWidth; if (w && Math.abs(w - last) > 4) { last = w; draw(); } }).observe(host);
  }
  return { set, zoom: local, get view() { return view; } };
}
