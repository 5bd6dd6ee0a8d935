// The screens a phone opens first: fleet, unit, sign-in; and what the others share
// (alarms, tickets and their details are in work.js, loaded on first use).
import { api, h, icon, isSales, canOperate, loadSession, setSession, dropEarly } from './api.js';
import { t, tn, has, lang, initLang, pointLabel, knownPoint, fmtValue, ago } from './i18n.js';

/** What earlier screens loaded, for names on later ones. */
export const cache = { units: new Map(), openAlarms: null };
export const unitName = (u) => u.display_name || u.device_key;
export const unitLabel = (id, key) => { const u = cache.units.get(id); return u ? unitName(u) : key || `#${id}`; };

// Worst first: a unit whose running state cannot be read is looked at before a stopped one.
const RANK = { alarm: 0, offline: 1, stale: 2, unknown: 3, stopped: 4, running: 5 };
const PROBLEM = new Set(['alarm', 'offline', 'stale']);
const statusOf = (u) => (u.status in RANK ? u.status : !u.gateway_online ? 'offline' : u.open_alarms > 0 ? 'alarm' : 'unknown');

export function statusBadge(st, big) {
  return h('span', { class: `st st-${st}${big ? ' big' : ''}` }, icon(st), h('b', { 'data-testid': 'status-word' }, t('st_' + st)));
}
export const gradeBadge = (g) => h('span', { class: `grade g${g}` }, h('b', null, g), h('small', null, has('grade_' + g) ? t('grade_' + g) : t('grade_n', { n: g })));
export const age = (ts) => h('span', { class: 'age', 'data-ts': ts || '' }, ago(ts));

export function errorBox(e, retry) {
  const msg = e.status === 0 ? t('offline') : e.status === 404 ? t('not_found') : t('error', { e: e.message });
  return h('div', { class: 'msg bad', role: 'alert' }, h('p', null, msg), retry && h('button', { class: 'btn', onclick: retry }, t('retry')));
}
export const toast = (text, bad) => {
  for (const old of document.querySelectorAll('.toast')) old.remove();
  const el = h('div', { class: 'toast' + (bad ? ' bad' : ''), role: 'status' }, text);
  document.body.append(el);
  setTimeout(() => el.remove(), 3500);
};
/** Run `fn` every `ms` while the page is visible. */
export function every(ctx, ms, fn) {
  const id = setInterval(() => { if (!document.hidden) fn(); }, ms);
  ctx.cleanups.push(() => clearInterval(id));
}

// Ages and clocks tick in place once a second.
export function startTicker() {
  setInterval(() => {
    if (document.hidden) return;
    const now = Date.now();
    for (const el of document.querySelectorAll('[data-ts]')) if (el.dataset.ts) el.textContent = ago(el.dataset.ts, now);
    for (const el of document.querySelectorAll('[data-due]')) el._paint?.(now);
  }, 1000);
}

/* ---------------------------------------------------------------- fleet */

export async function fleet(main, ctx) {
  document.title = t('units') + ' · Chillcloud';
  let units = await api('/api/v1/units');
  let shown = 60, query = '';
  const list = h('div', { class: 'cards', 'data-testid': 'unit-list' });
  const summary = h('div', { class: 'summary', 'data-testid': 'fleet-summary', role: 'status' });
  const more = h('div', { class: 'more' });
  const search = h('input', {
    type: 'search', class: 'search', placeholder: t('search'), 'aria-label': t('search'), 'data-testid': 'unit-search',
    oninput: (e) => { query = e.target.value.trim().toLowerCase(); shown = 60; paint(); },
  });
  function paint() {
    cache.units = new Map(units.map((u) => [u.id, u]));
    cache.openAlarms = units.reduce((n, u) => n + (u.open_alarms || 0), 0);
    ctx.badge(cache.openAlarms);
    const sorted = units.slice().sort((a, b) =>
      (RANK[statusOf(a)] ?? 3) - (RANK[statusOf(b)] ?? 3) || (b.open_alarms || 0) - (a.open_alarms || 0) ||
      unitName(a).localeCompare(unitName(b), undefined, { numeric: true }));
    const bad = sorted.filter((u) => PROBLEM.has(statusOf(u))).length, n = units.length;
    summary.className = 'summary ' + (n === 0 ? '' : bad ? 'attn' : 'ok');
    summary.replaceChildren(
      n ? icon(bad ? 'alarm' : 'running') : '',
      h('span', null, n === 0 ? t('fleet_none') : bad ? t(bad === 1 ? 'fleet_attention_1' : 'fleet_attention', { k: bad, n })
        : n === 1 ? t('fleet_all_ok_1') : t('fleet_all_ok', { n })));
    const counts = {};
    for (const u of units) counts[statusOf(u)] = (counts[statusOf(u)] || 0) + 1;
    summary.append(h('small', null, Object.keys(RANK).filter((k) => counts[k]).map((k) => `${counts[k]} ${t('st_' + k)}`).join(' · ')));
    const hits = query ? sorted.filter((u) => `${unitName(u)} ${u.gateway_id} ${u.device_key} ${u.model}`.toLowerCase().includes(query)) : sorted;
    list.replaceChildren(...hits.slice(0, shown).map(card));
    more.replaceChildren();
    if (hits.length > shown) {
      more.append(h('span', null, t('shown', { a: shown, n: hits.length })),
        h('button', { class: 'btn', onclick: () => { shown += 120; paint(); } }, t('show_more', { n: Math.min(120, hits.length - shown) })));
    }
  }
  main.replaceChildren(summary, units.length > 8 ? search : '', list, more);
  paint();
  every(ctx, 30e3, async () => {
    try { units = await api('/api/v1/units'); if (ctx.alive()) paint(); } catch (_) { /* keep showing what we have */ }
  });
}

function card(u) {
  const st = statusOf(u);
  return h('a', { class: `card st-${st}`, href: `#/unit/${u.id}`, 'data-testid': 'unit-card', 'data-unit-id': u.id, 'data-status': st },
    h('span', { class: 'card-st' }, icon(st), h('b', { 'data-testid': 'status-word' }, t('st_' + st))),
    h('span', { class: 'card-main' },
      h('span', { class: 'name' }, unitName(u)),
      !isSales() && h('span', { class: 'sub' }, u.gateway_id, u.model ? ' · ' + u.model : ''),
      u.open_alarms > 0 && h('span', { class: 'alm' }, tn('open_alarms', u.open_alarms)),
      h('span', { class: 'sub' }, u.last_seen ? [t('seen', { a: '' }).trim(), ' ', age(u.last_seen)] : t('never_seen'))));
}

/* ---------------------------------------------------------------- unit */

// The big values, in order: the first name a unit has of each group.
const KEY_POINTS = [
  ['evap_leaving_temp', 'supply_temp'], ['evap_entering_temp', 'return_temp'], ['active_setpoint', 'process_setpoint'],
  ['capacity_rla', 'capacity'], ['chw_delta_t'], ['supply_deviation'], ['cond_refrig_pressure'], ['evap_approach'],
  ['cond_approach'], ['kw_per_ton'], ['cop'], ['chiller_current'],
];
const DERIVED = new Set(['chw_delta_t', 'supply_deviation', 'evap_approach', 'cond_approach', 'starts_per_hour', 'cooling_kw', 'kw_per_ton', 'cop']);
const RANGES = { '1h': [3600e3, 'raw'], '6h': [21600e3, '1m'], '24h': [86400e3, '1m'], '7d': [604800e3, '1h'], '30d': [2592000e3, '1h'] };
const pickBucket = (span) => (span <= 7200e3 ? 'raw' : span <= 86400e3 * 1.1 ? '1m' : '1h');
const iso = (ms) => new Date(ms).toISOString();

/** A history response as chart data. */
function toSeries(res, p, from, to) {
  const d = { from, to, until: to, unit: p.unit, dropped: res.dropped || [] };
  if (res.bucket === 'raw') {
    d.kind = 'raw';
    d.pts = res.rows.map((r) => [Date.parse(r.ts), r.quality === 'bad' ? null : r.value]);
  } else {
    d.kind = 'buckets';
    d.w = res.bucket === '1m' ? 60e3 : 3600e3;
    d.rows = res.rows.map((r) => ({ t: Date.parse(r.ts), avg: r.avg, min: r.min, max: r.max, count: r.count }));
  }
  return d;
}

export async function unit(main, ctx) {
  const id = ctx.id;
  const [u, alarms] = await Promise.all([
    api(`/api/v1/units/${id}`),
    api(`/api/v1/alarms?state=open&unit=${id}&limit=20`).catch(() => []),
  ]);
  if (!ctx.alive()) return;
  document.title = unitName(u) + ' · Chillcloud';
  const pts = new Map(u.points.map((p) => [p.id, p]));
  const byName = new Map(u.points.map((p) => [p.name, p]));
  const keys = KEY_POINTS.map((g) => g.map((n) => byName.get(n)).find(Boolean)).filter(Boolean).slice(0, 8);

  const stEl = h('span', null, statusBadge(statusOf(u), true));
  const live = h('span', { class: 'live off', 'data-testid': 'live-state' }, t('live_wait'));
  const head = h('section', { class: 'uhead' },
    h('a', { class: 'back', href: '#/' }, '‹ ', t('units')),
    h('h1', null, unitName(u)),
    h('div', { class: 'sub' }, !isSales() && [t('site'), ' ', h('b', null, u.gateway_id), ' · '], u.model || u.profile),
    h('div', { class: 'row' }, stEl, live));
  const alarmBox = h('section', { class: 'ualarms' });
  const paintAlarms = (list) => {
    alarmBox.replaceChildren(...list.map((a) => alarmRow(a, true)));
    if (list.length) alarmBox.append(h('a', { class: 'link', href: `#/alarms?unit=${id}` }, t('for_unit'), ' ›'));
    if (!isSales()) alarmBox.append(h('a', { class: 'link', href: `#/reports/${id}`, 'data-testid': 'unit-reports' }, t('unit_reports'), ' ›'));
  };
  paintAlarms(alarms);

  const tiles = h('section', { class: 'tiles', 'aria-label': t('key_values') }, keys.map(tile));
  // The chart: range buttons, drag/pinch zoom, reset.
  const q = ctx.q;
  const cs = { pid: +q.get('p') || (keys[0] || u.points.find((p) => p.value != null) || u.points[0] || {}).id, range: RANGES[q.get('r')] ? q.get('r') : '1h', zoom: null, data: null };
  const chartTitle = h('h2', null);
  const reset = h('button', { class: 'btn small', hidden: true, 'data-testid': 'chart-reset', onclick: () => { cs.zoom = null; loadChart(); } }, t('reset'));
  const rangeBtns = Object.keys(RANGES).map((r) => h('button', {
    class: 'seg', 'data-testid': 'chart-range', 'data-range': r,
    onclick: () => { cs.range = r; cs.zoom = null; loadChart(); },
  }, t('range_' + r)));
  const chartHost = h('div', { class: 'chart-host' });
  const chartMsg = h('div', { class: 'chart-msg' });
  const chartBox = h('section', { class: 'panel chartbox', id: 'chart' },
    h('div', { class: 'row' }, chartTitle, reset), h('div', { class: 'segs' }, rangeBtns), chartHost, chartMsg,
    h('p', { class: 'hint' }, t('zoom_hint')));
  // The chart's code loads beside the first history request, not before the page shows.
  let c = null;
  const charting = import('./chart.js').then(({ chart }) => {
    c = chart(chartHost, {
      fmt: (v) => fmtValue(pts.get(cs.pid) || {}, v),
      onZoom: (from, to) => { cs.zoom = [from, Math.min(to, Date.now())]; loadChart(); },
    });
  });
  let seq = 0;
  async function loadChart() {
    const p = pts.get(cs.pid);
    if (!p) return;
    history.replaceState(null, '', `#/unit/${id}?p=${p.id}&r=${cs.range}`);
    chartTitle.replaceChildren(pointLabel(p.name), p.unit ? h('small', null, ' ', p.unit) : '');
    for (const b of rangeBtns) b.setAttribute('aria-pressed', String(!cs.zoom && b.dataset.range === cs.range));
    reset.hidden = !cs.zoom;
    const [from, to] = cs.zoom || [Date.now() - RANGES[cs.range][0], Date.now()];
    const bucket = cs.zoom ? pickBucket(to - from) : RANGES[cs.range][1];
    const my = ++seq;
    chartMsg.textContent = t('loading');
    try {
      const [res] = await Promise.all([api(`/api/v1/points/${p.id}/history?from=${iso(from)}&to=${iso(to)}&bucket=${bucket}`), charting]);
      if (my !== seq || !ctx.alive()) return;
      cs.data = toSeries(res, p, from, to);
      c.set(cs.data);
      chartMsg.textContent = '';
    } catch (e) {
      if (my === seq) chartMsg.replaceChildren(errorBox(e, loadChart));
    }
  }
  const list = h('section', { class: 'panel' }, h('h2', null, t('all_points')), h('p', { class: 'hint' }, t('tap_to_chart')),
    h('div', { class: 'plist' }, u.points.map(prow)));
  const attrs = Object.entries(u.attributes || {});
  const details = attrs.length || u.model ? h('details', { class: 'panel' }, h('summary', null, t('details')),
    h('dl', null, [[t('model'), u.model], ['profile', u.profile], ['id', u.device_key], ...attrs].map(([k, v]) => [h('dt', null, k), h('dd', null, v)]))) : '';
  // Remote control, for roles that may operate: its code comes with the work screens, after the page shows.
  let ctl = null;
  const ctlBox = canOperate() && u.points.some((p) => p.writable)
    ? h('section', { class: 'panel', 'aria-labelledby': 'ctl-h', 'data-testid': 'control' }) : '';
  const loadControl = () => {
    ctlBox.replaceChildren(h('h2', { id: 'ctl-h' }, t('ctl_title')), h('p', { class: 'loading' }, t('loading')));
    import('./work.js').then((m) => { if (ctx.alive()) ctl = m.control(ctlBox, u, ctx); },
      () => ctlBox.replaceChildren(h('h2', { id: 'ctl-h' }, t('ctl_title')), errorBox({ status: 0 }, loadControl)));
  };
  main.replaceChildren(head, alarmBox, tiles, chartBox, ctlBox, list, details);
  loadChart();
  if (ctlBox) loadControl();

  function select(p) {
    cs.pid = p.id; cs.zoom = null;
    loadChart();
    chartBox.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }
  function tile(p) {
    return h('button', { class: `tile q-${p.quality || 'none'}`, 'data-pid': p.id, 'data-testid': 'key-value', 'data-point-name': p.name, onclick: () => select(p) },
      h('span', { class: 'lbl' }, pointLabel(p.name)),
      h('span', { class: 'v' }, fmtValue(p, p.value), p.unit && !/%/.test(p.unit) ? h('small', null, ' ', p.unit) : p.unit ? h('small', null, p.unit) : ''),
      qual(p), age(p.ts));
  }
  function prow(p) {
    return h('button', { class: `prow q-${p.quality || 'none'}`, 'data-pid': p.id, 'data-testid': 'point-row', 'data-point-name': p.name, onclick: () => select(p) },
      h('span', { class: 'pn' }, pointLabel(p.name), knownPoint(p.name) ? h('small', null, p.name) : '', DERIVED.has(p.name) ? h('small', null, ' · ', t('derived')) : ''),
      h('span', { class: 'pv' },
        h('span', null, h('b', { 'data-testid': 'point-value', 'data-point-name': p.name, 'data-quality': p.quality || '' }, fmtValue(p, p.value)),
          p.unit ? ' ' + p.unit : '', qual(p)),
        age(p.ts)));
  }
  function qual(p) {
    return p.quality === 'bad' ? h('span', { class: 'q bad', 'data-testid': 'point-quality' }, t('bad'))
      : p.quality === 'uncertain' ? h('span', { class: 'q unc', 'data-testid': 'point-quality' }, t('uncertain')) : '';
  }
  function paintPoint(p, flash) {
    for (const el of main.querySelectorAll(`[data-pid="${p.id}"]`)) {
      const fresh = el.classList.contains('tile') ? tile(p) : prow(p);
      if (flash) fresh.classList.add('flash');
      el.replaceWith(fresh);
    }
    ctl?.paint(p, flash);
  }

  // Live values: Server-Sent Events, closed while the page is hidden.
  let es = null, retry = 0;
  function connect() {
    if (es) es.close();
    es = new EventSource(`/api/v1/units/${id}/live`);
    es.onopen = () => { live.className = 'live on'; live.textContent = t('live_on'); };
    es.onerror = () => {
      live.className = 'live off'; live.textContent = t('live_off');
      if (es.readyState === EventSource.CLOSED) {
        // Refused (signed out, or the server is restarting): check the session, then try again.
        clearTimeout(retry);
        retry = setTimeout(async () => { if (ctx.alive() && (await loadSession().catch(() => 1))) connect(); else if (ctx.alive()) ctx.signin(); }, 5000);
      }
    };
    es.addEventListener('reading', (e) => {
      let r;
      try { r = JSON.parse(e.data); } catch (_) { return; }
      const p = pts.get(r.point_id);
      if (!p || (p.ts && Date.parse(r.ts) < Date.parse(p.ts))) return;
      Object.assign(p, { value: r.value, quality: r.quality, ts: r.ts });
      paintPoint(p, true);
      const d = cs.data;
      if (r.point_id === cs.pid && c && d && !cs.zoom && d.kind === 'raw') {
        const ts = Date.parse(r.ts);
        d.pts.push([ts, r.quality === 'bad' ? null : r.value]);
        d.to = d.until = Math.max(d.to, ts, Date.now());
        d.from = d.to - RANGES[cs.range][0];
        c.set(d);
      }
    });
  }
  async function refresh() {
    try {
      const [fresh, al] = await Promise.all([api(`/api/v1/units/${id}`), api(`/api/v1/alarms?state=open&unit=${id}&limit=20`)]);
      if (!ctx.alive()) return;
      stEl.replaceChildren(statusBadge(statusOf(fresh), true));
      paintAlarms(al);
      for (const q of fresh.points) {
        const p = pts.get(q.id);
        if (p && q.ts && (!p.ts || Date.parse(q.ts) > Date.parse(p.ts))) { Object.assign(p, q); paintPoint(p); }
      }
    } catch (_) { /* shown as stale ages */ }
  }
  const vis = () => {
    if (document.hidden) { es?.close(); es = null; live.className = 'live off'; live.textContent = t('live_off'); }
    else { refresh(); connect(); }
  };
  document.addEventListener('visibilitychange', vis);
  connect();
  every(ctx, 60e3, refresh);
  ctx.cleanups.push(() => { es?.close(); clearTimeout(retry); document.removeEventListener('visibilitychange', vis); });
}

/* ---------------------------------------------------------------- alarm rows (unit page and list) */

export const title = (a) => (lang === 'zh' && a.title_zh ? a.title_zh : a.title);

export function alarmRow(a, compact) {
  return h('a', { class: `arow g${a.grade} as-${a.state}${compact ? ' compact' : ''}`, href: `#/alarm/${a.id}`, 'data-testid': 'alarm-row', 'data-alarm-id': a.id, 'data-state': a.state },
    gradeBadge(a.grade),
    h('span', { class: 'amain' },
      h('span', { class: 'atitle' }, title(a)),
      h('span', { class: 'sub' }, h('span', { class: `astate s-${a.state}`, 'data-testid': 'alarm-state' }, t('as_' + a.state)), ' ',
        compact ? '' : [a.unit_id ? unitLabel(a.unit_id, a.device_key) : t('site_alarm'), isSales() ? '' : ' · ' + a.gateway_id, ' · '], age(a.raised_at)),
      (a.muted || a.flapping || a.occurrences > 1) && h('span', { class: 'sub' },
        [a.occurrences > 1 && t('times', { n: a.occurrences }), a.flapping && t('flapping'), a.muted && t('muted')].filter(Boolean).join(' · '))));
}

/* ---------------------------------------------------------------- sign-in */

export async function signin(main, ctx) {
  document.title = t('signin') + ' · Chillcloud';
  const login = h('input', { name: 'login', autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false', required: true, 'data-testid': 'signin-login' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, 'data-testid': 'signin-password' });
  const err = h('p', { class: 'err', role: 'alert', 'data-testid': 'signin-error' });
  const btn = h('button', { class: 'btn primary wide', type: 'submit', 'data-testid': 'signin-submit' }, t('signin'));
  const form = h('form', { class: 'signin panel', 'data-testid': 'signin-form', onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = '';
    btn.disabled = true;
    try {
      const s = await api('/api/v1/session', { body: { login: login.value.trim(), password: password.value }, quiet401: true });
      dropEarly();
      setSession(s);
      initLang(s.user.language);
      ctx.signedIn();
    } catch (e2) {
      btn.disabled = false;
      err.textContent = e2.status === 401 ? t('signin_bad') : e2.status === 429 ? t('signin_slow') : e2.status === 0 ? t('offline') : t('error', { e: e2.message });
      password.select();
    }
  } },
  h('div', { class: 'brandbig' }, h('img', { src: '/ui/icon.svg', alt: '', width: 56, height: 56 }), h('h1', null, t('app'))),
  h('p', { class: 'sub' }, t('signin_hint')),
  h('label', null, t('login'), login), h('label', null, t('password'), password), err, btn);
  main.replaceChildren(form);
  login.focus();
}
