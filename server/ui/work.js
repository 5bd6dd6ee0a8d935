// The work screens, loaded when first opened: alarms, alarm detail, tickets, ticket detail; and a
// unit page's remote control, for those who may operate.
import { api, h, icon, isSales } from './api.js';
import { t, has, pointLabel, knownPoint, isBool, fmtValue, fmtNum, dur, when } from './i18n.js';
import { chart } from './chart.js';
import { alarmRow, title, unitLabel, unitName, gradeBadge, age, toast, every } from './views.js';

const ASTATE = { active: 0, cleared: 1, acknowledged: 2, closed: 3 };

export async function alarms(main, ctx) {
  document.title = t('alarms') + ' · Chillcloud';
  const state = ctx.q.get('state') === 'all' ? 'all' : 'open';
  const unitId = ctx.q.get('unit');
  const url = `/api/v1/alarms?state=${state}&limit=200${unitId ? '&unit=' + encodeURIComponent(unitId) : ''}`;
  const list = h('div', { class: 'alist' });
  const qs = (s) => `#/alarms?state=${s}${unitId ? '&unit=' + unitId : ''}`;
  const tabs = h('div', { class: 'segs' },
    h('a', { class: 'seg', href: qs('open'), 'aria-pressed': String(state === 'open') }, t('al_open')),
    h('a', { class: 'seg', href: qs('all'), 'aria-pressed': String(state === 'all') }, t('al_all')));
  const filter = unitId ? h('div', { class: 'chipline' }, h('a', { class: 'chip', href: `#/unit/${unitId}` }, unitLabel(+unitId)),
    h('a', { class: 'chip', href: `#/alarms?state=${state}` }, '✕ ', t('all_units'))) : '';
  function paint(rows) {
    rows.sort((a, b) => ASTATE[a.state] - ASTATE[b.state] || a.grade - b.grade || Date.parse(b.raised_at) - Date.parse(a.raised_at));
    if (state === 'open' && !unitId) ctx.badge(rows.filter((a) => a.state === 'active').length);
    list.replaceChildren(...(rows.length ? rows.map((a) => alarmRow(a)) : [h('p', { class: 'msg ok' }, icon('running'), state === 'open' ? t('al_none_open') : t('al_none'))]));
  }
  paint(await api(url));
  main.replaceChildren(h('h1', null, t('alarms')), tabs, filter, list);
  every(ctx, 30e3, async () => { try { const r = await api(url); if (ctx.alive()) paint(r); } catch (_) { /* keep */ } });
}

// Captured points in this order: those the alarm's message names, then these, then the rest.
const CAPTURE_ORDER = ['evap_leaving_temp', 'supply_temp', 'evap_entering_temp', 'return_temp', 'active_setpoint',
  'process_setpoint', 'supply_deviation', 'chw_delta_t', 'capacity_rla', 'capacity', 'cond_refrig_pressure',
  'evap_refrig_pressure', 'evap_approach', 'cond_approach', 'running', 'flow_proven'];

export async function alarm(main, ctx) {
  const a = await api(`/api/v1/alarms/${ctx.id}`);
  if (!ctx.alive()) return;
  document.title = title(a) + ' · Chillcloud';
  const canAck = (a.state === 'active' || a.state === 'cleared') && !isSales();
  const reload = () => ctx.rerender();
  // The message names points ("supply_deviation 2.6, running 1"): show their labels.
  const message = (a.message || '')
    .replace(/\b([a-z][a-z0-9_]+) (-?\d+(?:\.\d+)?)/g, (m, n, v) => (isBool({ name: n }) ? `${pointLabel(n)} ${fmtValue({ name: n }, +v)}` : m))
    .replace(/[a-z][a-z0-9_]+/g, (w) => (knownPoint(w) ? pointLabel(w) : w));
  const facts = [
    [t('raised'), when(a.raised_at), a.raised_at],
    a.occurrences > 1 && [t('last_raised'), when(a.last_raised_at), a.last_raised_at],
    a.cleared_at && [t('cleared'), when(a.cleared_at), a.cleared_at],
    a.acknowledged_at && [t('acknowledged_by', { w: a.acknowledged_by || '?' }), when(a.acknowledged_at), a.acknowledged_at],
    a.closed_at && [t('closed'), when(a.closed_at), a.closed_at],
  ].filter(Boolean);
  const head = h('section', { class: `panel ahead g${a.grade}` },
    h('a', { class: 'back', href: '#/alarms' }, '‹ ', t('alarms')),
    h('div', { class: 'row' }, gradeBadge(a.grade), h('span', { class: `astate s-${a.state}`, 'data-testid': 'alarm-state' }, t('as_' + a.state))),
    h('h1', null, title(a)),
    message && h('p', { class: 'amsg' }, message),
    h('p', { class: 'sub' }, a.unit_id ? h('a', { href: `#/unit/${a.unit_id}` }, unitLabel(a.unit_id, a.device_key), ' ›') : t('site_alarm'),
      isSales() ? '' : ' · ' + a.gateway_id),
    h('dl', { class: 'facts' }, facts.map(([k, v, ts]) => [h('dt', null, k), h('dd', null, v, ' (', age(ts), ')')])),
    (a.muted || a.flapping || a.shelved_until) && h('p', { class: 'sub' },
      [a.flapping && t('flapping'), a.muted && t('muted'), a.shelved_until && t('shelved', { t: when(a.shelved_until) })].filter(Boolean).join(' · ')));
  const ackBox = h('div', { class: 'ack' });
  function ackStart() {
    const comment = h('textarea', { rows: 2, 'data-testid': 'ack-comment', placeholder: t('ack_comment'), 'aria-label': t('ack_comment') });
    const yes = h('button', { class: 'btn primary', 'data-testid': 'ack-confirm', onclick: async () => {
      yes.disabled = true;
      try {
        await api(`/api/v1/alarms/${a.id}/acknowledge`, { body: { comment: comment.value.trim() } });
        toast(t('ack_done'));
        reload();
      } catch (e) {
        yes.disabled = false;
        toast(e.status === 409 ? e.message : t('error', { e: e.message }), true);
        if (e.status === 409) reload();
      }
    } }, t('ack_confirm'));
    ackBox.replaceChildren(h('div', { class: 'confirm' }, h('p', null, t('ack_q')), comment,
      h('div', { class: 'row' }, h('button', { class: 'btn', 'data-testid': 'ack-cancel', onclick: ackIdle }, t('cancel')), yes)));
    comment.focus();
  }
  function ackIdle() {
    ackBox.replaceChildren(canAck ? h('button', { class: 'btn primary wide', 'data-testid': 'ack-button', onclick: ackStart }, t('ack')) : '');
  }
  ackIdle();
  head.append(ackBox);

  // The fault-moment capture: one point at a time, the raise marked.
  const cap = h('section', { class: 'panel' }, h('h2', null, t('capture')));
  const series = Array.isArray(a.capture) ? a.capture.filter((x) => x.readings && x.readings.length) : null;
  if (series && series.length) {
    const from = Date.parse(a.capture_from), to = Date.parse(a.capture_to);
    // The first point the message names that is not a flag ("running 1" is the gate, not the fault).
    const named = ((a.message || '').match(/[a-z][a-z0-9_]+/g) || []).filter((n) => !isBool({ name: n }));
    const rank = (x) => { const i = named.indexOf(x.point), k = CAPTURE_ORDER.indexOf(x.point); return i >= 0 ? i : k >= 0 ? 100 + k : 999; };
    series.sort((x, y) => rank(x) - rank(y));
    let cur = series[0];
    const host = h('div', { class: 'chart-host' });
    const chips = h('div', { class: 'chips', role: 'tablist' });
    const reset = h('button', { class: 'btn small', hidden: true, onclick: () => show(cur) }, t('reset'));
    cap.append(h('div', { class: 'row' }, h('span', { class: 'sub' }, when(a.capture_from), ' – ', when(a.capture_to)), reset), host, chips, h('p', { class: 'hint' }, t('zoom_hint')));
    const c = chart(host, { fmt: (v) => fmtValue({ name: cur.point, unit: cur.unit }, v), onZoom: (f, tt) => { reset.hidden = false; c.zoom(f, tt); } });
    const show = (x) => {
      cur = x;
      reset.hidden = true;
      for (const b of chips.children) b.setAttribute('aria-pressed', String(b.dataset.point === x.point));
      c.set({ kind: 'raw', from, to, until: to, unit: x.unit, pts: x.readings, marks: [{ t: Date.parse(a.raised_at), label: t('raised_mark') }] });
    };
    chips.append(...series.map((x) => h('button', { class: 'chip', 'data-point': x.point, 'data-testid': 'capture-point', onclick: () => show(x) }, pointLabel(x.point))));
    main.replaceChildren(head, cap);
    show(cur);
  } else {
    const due = a.capture_to && Date.parse(a.capture_to) > Date.now() - 120e3;
    cap.append(h('p', { class: 'sub' }, !a.capture_from ? t('capture_none') : due ? t('capture_wait', { t: when(a.capture_to) }) : t('capture_none')));
    main.replaceChildren(head, a.unit_id ? cap : '');
    if (due) { const tm = setTimeout(reload, Math.max(15e3, Date.parse(a.capture_to) + 60e3 - Date.now())); ctx.cleanups.push(() => clearTimeout(tm)); }
  }
  main.append(h('section', { class: 'panel' }, h('h2', null, t('events')),
    h('ol', { class: 'events' }, (a.events || []).map((e) => h('li', null,
      h('b', null, has('ev_' + e.kind) ? t('ev_' + e.kind) : e.kind), e.grade ? ` (${t('grade_n', { n: e.grade })})` : '', e.actor ? ' · ' + e.actor : '',
      h('span', { class: 'sub' }, ' ', when(e.at)), e.comment ? h('div', { class: 'sub' }, e.comment) : '')))));
}

/* ---------------------------------------------------------------- tickets */

/** The clocks of a ticket: [name, due, done-at, applies], as the server checks them (the
 * on-site clock runs for site visits only). */
function clocks(tk) {
  return [
    ['respond', tk.respond_by, tk.responded_at, true],
    ['on_site', tk.on_site_by, tk.on_site_at, tk.triage === 'site_visit' || !!tk.on_site_at],
    ['escalate', tk.escalate_by, tk.resolved_at, true],
  ];
}
function clockEl(tk, [name, due, done, applies]) {
  const el = h('span', { class: 'clock', 'data-testid': 'ticket-clock', 'data-clock': name });
  if (!applies) el.textContent = tk.triage ? t('not_needed') : t('untriaged');
  else if (done || tk.closed_at) el.textContent = t('done_at', { t: when(done || tk.closed_at) });
  else { el.dataset.due = due; el._paint = (now) => paintClock(el, now); }
  if ((tk.breached || []).includes(name)) el.dataset.breached = '1';
  paintClock(el);
  return el;
}
function paintClock(el, now = Date.now()) {
  if (!el.dataset.due) { if (el.dataset.breached) el.classList.add('late'); return; }
  const left = Date.parse(el.dataset.due) - now;
  el.textContent = left >= 0 ? t('left', { d: dur(left) }) : t('overdue', { d: dur(left) });
  el.classList.toggle('late', left < 0 || !!el.dataset.breached);
  el.classList.toggle('soon', left >= 0 && left < 1800e3);
}
/** The clock that runs out first, of those still running. */
function nextClock(tk) {
  return clocks(tk).filter(([, , done, applies]) => applies && !done && !tk.closed_at).sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]))[0];
}

export async function tickets(main, ctx) {
  document.title = t('tickets') + ' · Chillcloud';
  const state = ['closed', 'all'].includes(ctx.q.get('state')) ? ctx.q.get('state') : 'open';
  const rows = await api(`/api/v1/tickets?state=${state}`);
  const due = (tk) => { const c = nextClock(tk); return c ? Date.parse(c[1]) : Infinity; };
  rows.sort((a, b) => due(a) - due(b) || a.grade - b.grade);
  const tabs = h('div', { class: 'segs' }, ['open', 'closed', 'all'].map((s) =>
    h('a', { class: 'seg', href: `#/tickets?state=${s}`, 'aria-pressed': String(state === s) }, t('tk_' + s))));
  const list = h('div', { class: 'alist' }, rows.length ? rows.map((tk) => {
    const c = nextClock(tk);
    return h('a', { class: `arow g${tk.grade}`, href: `#/ticket/${tk.id}`, 'data-testid': 'ticket-row', 'data-ticket-id': tk.id },
      gradeBadge(tk.grade),
      h('span', { class: 'amain' }, h('span', { class: 'atitle' }, tk.title),
        h('span', { class: 'sub' }, `#${tk.id} · `, tk.unit_id ? unitLabel(tk.unit_id) + ' · ' : '', tk.gateway_id),
        h('span', { class: 'sub' }, h('span', { class: `astate ts-${tk.status}` }, t('ts_' + tk.status)), c ? [' ', t('clock_' + c[0]), ': ', clockEl(tk, c)] : '')));
  }) : h('p', { class: 'msg' }, t('tk_none')));
  main.replaceChildren(h('h1', null, t('tickets')), tabs, list);
  every(ctx, 60e3, () => ctx.rerender());
}

export async function ticket(main, ctx) {
  const { ticket: tk, events } = await api(`/api/v1/tickets/${ctx.id}`);
  if (!ctx.alive()) return;
  document.title = `#${tk.id} ${tk.title} · Chillcloud`;
  const closed = !!tk.closed_at;
  const head = h('section', { class: `panel ahead g${tk.grade}` },
    h('a', { class: 'back', href: '#/tickets' }, '‹ ', t('tickets')),
    h('div', { class: 'row' }, gradeBadge(tk.grade), h('span', { class: `astate ts-${tk.status}`, 'data-testid': 'ticket-status' }, t('ts_' + tk.status))),
    h('h1', null, `#${tk.id} `, tk.title),
    h('p', { class: 'sub' }, tk.unit_id ? [h('a', { href: `#/unit/${tk.unit_id}` }, unitLabel(tk.unit_id), ' ›'), ' · '] : '', tk.gateway_id,
      tk.alarm_id ? [' · ', h('a', { href: `#/alarm/${tk.alarm_id}` }, t('from_alarm'), ' ›')] : ''),
    h('dl', { class: 'facts' },
      h('dt', null, t('opened')), h('dd', null, when(tk.opened_at), ' (', age(tk.opened_at), ')'),
      h('dt', null, t('assignee')), h('dd', null, tk.assignee_id ? `#${tk.assignee_id}` : t('unassigned')),
      h('dt', null, t('triage')), h('dd', null, tk.triage ? t('tr_' + tk.triage) : '—'),
      Array.isArray(tk.parts) && tk.parts.length ? [h('dt', null, t('parts')), h('dd', null, tk.parts.join(', '))] : '',
      tk.satisfaction ? [h('dt', null, '★'), h('dd', null, t('satisfaction', { n: tk.satisfaction }))] : ''));
  const clockBox = h('section', { class: 'panel clocks' }, clocks(tk).map((c) => h('div', { class: 'clockrow' },
    h('span', null, h('b', null, t('clock_' + c[0])), h('small', { class: 'sub' }, when(c[1]))),
    h('span', { class: 'cr' }, clockEl(tk, c), (tk.breached || []).includes(c[0]) ? h('span', { class: 'q bad' }, t('breached')) : ''))));
  const comment = h('textarea', { rows: 3, 'data-testid': 'ticket-comment', placeholder: t('comment'), 'aria-label': t('comment') });
  let armed = null;
  const act = (action, done) => h('button', {
    class: 'btn' + (action === 'resolve' ? ' primary' : ''), 'data-testid': 'ticket-action', 'data-action': action, disabled: closed || !!done,
    onclick: async (e) => {
      const b = e.currentTarget;
      if (action === 'note' && !comment.value.trim()) { toast(t('note_needed'), true); comment.focus(); return; }
      if (action === 'resolve' && armed !== b) {
        armed = b; b.textContent = t('confirm');
        setTimeout(() => { if (armed === b) { armed = null; b.textContent = t('act_resolve'); } }, 5000);
        return;
      }
      b.disabled = true;
      try {
        await api(`/api/v1/tickets/${tk.id}/${action}`, { body: { comment: comment.value.trim() } });
        toast(t('saved'));
        ctx.rerender();
      } catch (err) { b.disabled = false; toast(t('error', { e: err.message }), true); }
    },
  }, t('act_' + action));
  const actions = isSales() ? '' : h('section', { class: 'panel' }, comment, h('div', { class: 'actions' },
    act('respond', tk.responded_at), act('on_site', tk.on_site_at), act('note'), act('resolve', tk.resolved_at)));
  const evs = h('section', { class: 'panel' }, h('h2', null, t('events')), h('ol', { class: 'events' }, events.map((e) => h('li', null,
    h('b', null, e.kind === 'closed' ? t('tk_closed_ev') : has('tk_' + e.kind) ? t('tk_' + e.kind) : e.kind), e.actor ? ' · ' + e.actor : '', h('span', { class: 'sub' }, ' ', when(e.at)),
    e.kind === 'breached' && e.comment ? ' ' + t('clock_' + e.comment) : e.comment ? h('div', { class: 'sub' }, e.comment) : ''))));
  main.replaceChildren(head, clockBox, actions, evs);
}

/* ---------------------------------------------------------------- remote control (unit page) */

const FINAL = ['done', 'refused', 'failed', 'expired', 'unanswered'];
/** A coil or a 0/1 register: offered as its opposite action, not as a number to type. */
const isSwitch = (p) => p.min === 0 && p.max === 1 && (p.step ?? 1) === 1;
const places = (x) => Math.min(6, (String(x ?? '').split('.')[1] || '').length);
/** Decimals a writable point's values have: those of its step and its lowest value. */
const dp = (p) => Math.max(places(p.step ?? 1), places(p.min ?? 0));
const num = (p, v) => (p.min == null ? fmtNum(v, p.unit) : (+v).toFixed(dp(p)));
const unitOf = (p) => (p.unit ? ' ' + p.unit : '');
/** A writable point's value as the control shows it: a word for a switch, else the number
 * with its unit at the step's decimals. */
function ctlValue(p, v) {
  if (v == null || !isFinite(v)) return '—';
  if (isSwitch(p)) return p.name === 'chiller_enable' ? t(v ? 'ctl_en_1' : 'ctl_en_0') : t(v ? 'on' : 'off');
  return num(p, v) + unitOf(p);
}

/**
 * The remote control of a unit page, into `box`: the unit's writable points with their values,
 * each changed in two steps (the value, checked against the bounds the gateway announced; then
 * a review of now → new to confirm), the command followed until its result is final, and the
 * unit's recent commands. Returns `paint(point, changed)` for live values.
 */
export function control(box, u, ctx) {
  const points = u.points.filter((p) => p.writable);
  const byName = new Map(u.points.map((p) => [p.name, p]));
  const rowEls = new Map();
  const rows = h('div', { class: 'plist' });
  const result = h('p', { class: 'cres', role: 'status', 'aria-live': 'polite', 'data-testid': 'command-result', hidden: true });
  const log = h('ol', { class: 'clog', 'aria-labelledby': 'ctl-log' });
  let busy = false, editor = null;

  function row(p) {
    const bounded = p.min != null && p.max != null;
    const open = (label, go) => h('button', {
      class: 'btn small', 'data-testid': 'command-open', 'data-point-name': p.name, 'aria-label': `${label}: ${pointLabel(p.name)}`, disabled: busy, onclick: go,
    }, label);
    let acts;
    if (!bounded) acts = h('small', { class: 'sub' }, t('ctl_nobounds'));
    else if (isSwitch(p)) {
      const words = p.name === 'chiller_enable' ? ['ctl_stop', 'ctl_start'] : ['ctl_off', 'ctl_on'];
      acts = (p.value == null ? [1, 0] : [p.value ? 0 : 1]).map((to) => open(t(words[to]), () => { closeEditor(); review(p, to); }));
    } else acts = open(t('ctl_change'), () => edit(p));
    return h('div', { class: 'crow', 'data-point-name': p.name },
      h('span', { class: 'pn' }, pointLabel(p.name), h('small', null, p.name)),
      h('b', { class: 'cv', 'data-testid': 'command-point-value', 'data-point-name': p.name }, ctlValue(p, p.value)),
      h('span', { class: 'cacts' }, acts));
  }
  function paint(p, changed) {
    const old = rowEls.get(p.id);
    if (!old) return;
    const fresh = row(p);
    if (changed) fresh.classList.add('flash');
    old.replaceWith(fresh);
    rowEls.set(p.id, fresh);
  }
  function setBusy(b) {
    busy = b;
    for (const el of box.querySelectorAll('[data-testid=command-open]')) el.disabled = b;
  }
  function closeEditor() { editor?.remove(); editor = null; }

  /** Step one for a number: the new value, checked before the review. */
  function edit(p) {
    closeEditor();
    const range = t('ctl_range', { min: num(p, p.min), max: num(p, p.max), u: unitOf(p), step: num(p, p.step ?? 1) });
    const input = h('input', {
      id: 'ctl-in', type: 'number', inputmode: 'decimal', min: p.min, max: p.max, step: p.step ?? 'any', required: true,
      value: p.value == null ? '' : num(p, p.value), 'aria-describedby': 'ctl-range ctl-err', 'data-testid': 'command-value',
    });
    const err = h('p', { class: 'err', id: 'ctl-err', role: 'alert', 'data-testid': 'command-error' });
    editor = h('form', { class: 'cedit', novalidate: true, onsubmit: (e) => {
      e.preventDefault();
      const c = check(p, input.value, range);
      input.setAttribute('aria-invalid', String(!!c.error));
      err.textContent = c.error || '';
      if (c.error) input.focus();
      else review(p, c.value);
    } },
    h('label', { for: 'ctl-in' }, t('ctl_new'), ': ', pointLabel(p.name)),
    h('span', { class: 'cin' }, input, p.unit ? h('span', null, p.unit) : ''),
    h('p', { class: 'hint', id: 'ctl-range', 'data-testid': 'command-range' }, range), err,
    h('div', { class: 'row' }, h('button', { type: 'button', class: 'btn', onclick: closeEditor }, t('cancel')),
      h('button', { type: 'submit', class: 'btn primary', 'data-testid': 'command-next' }, t('ctl_next'))));
    rowEls.get(p.id).after(editor);
    input.focus();
  }
  /** The value typed, within the bounds and on the step, or why not (the server checks again). */
  function check(p, text, range) {
    const raw = text.trim().replace(',', '.');
    const v = raw === '' ? NaN : Number(raw);
    const say = { v: raw, min: num(p, p.min), max: num(p, p.max), u: unitOf(p), step: num(p, p.step ?? 1) };
    if (!isFinite(v)) return { error: t('ctl_nan') + ' ' + range };
    if (v < p.min - 1e-9 || v > p.max + 1e-9) return { error: t('ctl_out', say) };
    const step = p.step || 1, k = (v - p.min) / step;
    const snap = (n) => Math.min(p.max, Math.max(p.min, +(p.min + n * step).toFixed(dp(p))));
    if (Math.abs(k - Math.round(k)) > 1e-6) return { error: t('ctl_off_step', { ...say, a: num(p, snap(Math.floor(k))), b: num(p, snap(Math.ceil(k))) }) };
    const value = snap(Math.round(k));
    if (p.value != null && Math.abs(value - p.value) < step / 2) return { error: t('ctl_same', { v: ctlValue(p, p.value) }) };
    return { value };
  }

  /** Step two: now → new, plainly, to confirm or cancel. */
  function review(p, value) {
    const start = p.name === 'chiller_enable' ? (value ? 'start' : 'stop') : '';
    const dlg = h('dialog', { class: 'sheet', role: 'dialog', 'data-testid': 'command-review', 'aria-labelledby': 'ctl-q', 'aria-describedby': 'ctl-w' });
    const close = () => (dlg.close ? dlg.close() : dlg.remove());
    const no = h('button', { class: 'btn', 'data-testid': 'command-cancel', onclick: close }, t('cancel'));
    const yes = h('button', { class: 'btn primary', 'data-testid': 'command-confirm', onclick: () => {
      yes.disabled = true;
      close();
      closeEditor();
      send(p, value);
    } }, start ? t('ctl_yes_' + start) : t('ctl_yes_set', { v: ctlValue(p, value) }));
    dlg.append(
      h('h2', { id: 'ctl-q' }, start ? t('ctl_q_' + start) : t('ctl_q_set', { p: pointLabel(p.name) })),
      h('p', { class: 'sub' }, unitName(u), ' · ', u.gateway_id),
      h('dl', { class: 'change' },
        h('dt', null, t('ctl_now')), h('dd', { 'data-testid': 'command-current' }, ctlValue(p, p.value)),
        h('dt', null, t('ctl_to')), h('dd', { class: 'new', 'data-testid': 'command-new' }, ctlValue(p, value))),
      h('p', { class: 'cwarn', id: 'ctl-w' }, t(start ? 'ctl_warn_' + start : 'ctl_warn')),
      h('div', { class: 'row' }, no, yes));
    dlg.addEventListener('close', () => dlg.remove());
    box.append(dlg);
    // Modal where the browser has it; the cancel button takes the focus, so Enter does not send.
    if (dlg.showModal) dlg.showModal(); else dlg.setAttribute('open', '');
    no.focus();
  }

  function show(status, text) {
    const bad = !['done', 'sent', 'sending'].includes(status);
    result.className = 'cres cs-' + status;
    result.dataset.status = status;
    result.replaceChildren(icon(status === 'done' ? 'running' : bad ? 'alarm' : 'stale'), h('span', null, text));
    result.hidden = false;
  }
  /** Sends the command and follows it until its result is final (a minute at most). */
  async function send(p, value) {
    setBusy(true);
    show('sending', t('ctl_sending'));
    result.scrollIntoView?.({ block: 'nearest' });
    let c;
    try {
      c = await api(`/api/v1/units/${u.id}/commands`, { body: { point: p.name, value } });
    } catch (e) {
      setBusy(false);
      if (e.status === 409) show('refused', t('ctl_refused', { m: e.message }));
      else if (e.status === 403) show('refused', t('ctl_forbidden'));
      else show('error', e.status === 0 ? t('offline') : t('error', { e: e.message }));
      loadLog();
      return;
    }
    show('sent', t('ctl_sent'));
    loadLog();
    const until = Date.now() + 60e3;
    while (!FINAL.includes(c.status) && Date.now() < until && ctx.alive()) {
      await new Promise((r) => setTimeout(r, 500));
      try { c = await api(`/api/v1/commands/${encodeURIComponent(c.id)}`); } catch (_) { /* try again */ }
    }
    if (!ctx.alive()) return;
    setBusy(false);
    const m = c.message || '—';
    show(c.status, c.status === 'done' ? t('ctl_done', { v: ctlValue(p, c.read_back ?? c.value) })
      : FINAL.includes(c.status) ? t('ctl_' + c.status, { m }) : t('ctl_slow'));
    loadLog();
  }

  async function loadLog() {
    try {
      const list = await api(`/api/v1/units/${u.id}/commands?limit=10`);
      if (ctx.alive()) log.replaceChildren(...(list.length ? list.map(logRow) : [h('li', { class: 'sub' }, t('ctl_none'))]));
    } catch (_) { /* keep the last list */ }
  }
  function logRow(c) {
    const p = byName.get(c.point) || { name: c.point, unit: c.unit };
    return h('li', { class: 'crec', 'data-testid': 'command-row', 'data-status': c.status, 'data-command-id': c.id },
      h('span', { class: 'cwhat' }, h('b', null, pointLabel(c.point)), ' ', ctlValue(p, c.previous_value), ' → ', h('b', null, ctlValue(p, c.value))),
      h('span', { class: 'astate cs-' + c.status }, has('cs_' + c.status) ? t('cs_' + c.status) : c.status),
      h('span', { class: 'sub' }, when(c.requested_at), ' · ', c.requested_by),
      c.status !== 'done' && c.message ? h('span', { class: 'sub' }, c.message) : '');
  }

  for (const p of points) rowEls.set(p.id, row(p));
  rows.append(...rowEls.values());
  box.replaceChildren(h('h2', { id: 'ctl-h' }, t('ctl_title')), h('p', { class: 'hint' }, t('ctl_hint')),
    u.gateway_online === false ? h('p', { class: 'cwarn' }, t('ctl_gw_offline')) : '',
    rows, result, h('h3', { id: 'ctl-log' }, t('ctl_recent')), log);
  loadLog();
  every(ctx, 30e3, () => { if (!busy) loadLog(); });
  return { paint };
}
