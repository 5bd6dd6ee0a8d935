// The work screens, loaded when first opened: alarms, alarm detail, tickets, ticket detail.
import { api, h, icon, isSales } from './api.js';
import { t, has, pointLabel, knownPoint, isBool, fmtValue, dur, when } from './i18n.js';
import { chart } from './chart.js';
import { alarmRow, title, unitLabel, gradeBadge, age, toast, every } from './views.js';

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
