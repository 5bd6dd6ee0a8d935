// The remote doctor's screens, loaded on first use: a unit's reports, and one report to read
// (owners, on a phone) or to review and sign (service engineers).
import { api, h, s, canTickets } from './api.js';
import { t, lang, when } from './i18n.js';
import { toast, unitLabel } from './views.js';

const pick = (obj, key) => (lang === 'zh' && obj[key + '_zh'] ? obj[key + '_zh'] : obj[key]);
const num = (v, d, unit = '') => (v == null ? '–' : (+v).toFixed(d) + unit);
const day = (ts) => (ts || '').slice(0, 10);

/** A unit's reports, newest first, where service staff draft a new one; without a unit, the
 * drafts waiting for review (service staff) or the signed reports (customers). */
export async function reports(main, ctx) {
  const unit = ctx.id;
  if (!unit) return queue(main, ctx);
  const list = await api(`/api/v1/units/${unit}/reports`);
  if (!ctx.alive()) return;
  document.title = t('reports') + ' · Chillcloud';
  const rows = list.map((r) => h('a', { class: 'card', href: `#/report/${r.id}`, 'data-testid': 'report-row' },
    h('div', { class: 'row' }, h('b', null, `${day(r.period_start)} – ${day(r.period_end)}`),
      h('span', { class: `astate rs-${r.status}` }, t('rs_' + r.status))),
    h('p', { class: 'sub' }, r.headline)));
  const draft = canTickets() ? h('button', {
    class: 'btn primary', 'data-testid': 'report-draft',
    onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      const to = new Date(); to.setUTCMinutes(0, 0, 0);
      const from = new Date(to.getTime() - 30 * 86400e3);
      try {
        const r = await api(`/api/v1/units/${unit}/reports`, { body: { from: from.toISOString(), to: to.toISOString() } });
        location.hash = `#/report/${r.id}`;
      } catch (err) { button.disabled = false; toast(t('error', { e: err.message }), true); }
    },
  }, t('report_draft_30')) : '';
  main.replaceChildren(h('section', { class: 'panel' },
    h('a', { class: 'back', href: `#/unit/${unit}` }, '‹ ', unitLabel(+unit)),
    h('h1', null, t('reports')), draft,
    rows.length ? h('div', { class: 'cards' }, rows) : h('p', { class: 'sub' }, t('reports_none'))));
}

async function queue(main, ctx) {
  const status = canTickets() ? 'draft' : 'signed';
  const list = await api(`/api/v1/reports?status=${status}`);
  if (!ctx.alive()) return;
  document.title = t('reports') + ' · Chillcloud';
  const rows = list.map((r) => h('a', { class: 'card', href: `#/report/${r.id}`, 'data-testid': 'report-row' },
    h('div', { class: 'row' }, h('b', null, unitLabel(r.unit_id)), h('span', { class: `astate rs-${r.status}` }, t('rs_' + r.status))),
    h('p', { class: 'sub' }, `${day(r.period_start)} – ${day(r.period_end)} · `, t('n_findings', { n: r.findings }))));
  main.replaceChildren(h('section', { class: 'panel' }, h('h1', null, t(status === 'draft' ? 'reports_to_review' : 'reports')),
    rows.length ? h('div', { class: 'cards' }, rows) : h('p', { class: 'sub' }, t('reports_none'))));
}

/** A finding's evidence: daily values and the fitted trend, as a small SVG line chart. */
function evidenceChart(ev) {
  const W = 320, H = 120, L = 34, R = 6, T = 8, B = 18;
  const all = [...ev.daily, ...ev.fit];
  if (!all.length) return '';
  const days = all.map((d) => Date.parse(d.day));
  const [x0, x1] = [Math.min(...days), Math.max(...days)];
  let [lo, hi] = [Math.min(...all.map((d) => d.value)), Math.max(...all.map((d) => d.value))];
  const pad = Math.max((hi - lo) * 0.1, 0.1); lo -= pad; hi += pad;
  const x = (d) => L + (Date.parse(d.day) - x0) / Math.max(x1 - x0, 1) * (W - L - R);
  const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
  const line = (pts) => pts.map((d) => `${x(d).toFixed(1)},${y(d.value).toFixed(1)}`).join(' ');
  return s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'evidence', role: 'img', 'aria-label': ev.input },
    s('rect', { x: L, y: T, width: W - L - R, height: H - T - B, fill: 'none', stroke: '#bbb', 'stroke-width': 0.6 }),
    s('text', { x: L - 3, y: y(hi - pad) + 4, 'text-anchor': 'end', 'font-size': 9 }, (hi - pad).toFixed(1)),
    s('text', { x: L - 3, y: y(lo + pad) + 4, 'text-anchor': 'end', 'font-size': 9 }, (lo + pad).toFixed(1)),
    s('text', { x: L, y: H - 4, 'font-size': 9 }, day(ev.daily[0]?.day || ev.fit[0]?.day)),
    s('text', { x: W - R, y: H - 4, 'font-size': 9, 'text-anchor': 'end' }, day(all[all.length - 1].day)),
    ev.fit.length ? s('polyline', { points: line(ev.fit), fill: 'none', stroke: '#d62728', 'stroke-dasharray': '5 3', 'stroke-width': 1.2 }) : '',
    s('polyline', { points: line(ev.daily), fill: 'none', stroke: '#1f77b4', 'stroke-width': 1.6 }));
}

function worth(f, currency) {
  if (f.yearly_cost == null) return t('not_estimated');
  return t('worth_year', { c: Math.round(f.yearly_cost).toLocaleString(), cur: currency, k: Math.round(f.yearly_kwh).toLocaleString() }) +
    (f.estimated ? ' ' + t('estimated') : '');
}

/** One report: read it (owners), or review and sign a draft (service staff). */
export async function report(main, ctx) {
  const r = await api(`/api/v1/reports/${ctx.id}`);
  if (!ctx.alive()) return;
  const c = r.content;
  document.title = t('report') + ' · ' + c.unit.name + ' · Chillcloud';
  const reviewing = r.status === 'draft' && canTickets();
  const drops = new Set();
  const advice = new Map();
  const k = c.kpis, p = c.previous;
  const head = h('section', { class: 'panel' },
    h('a', { class: 'back', href: `#/reports/${c.unit.id}` }, '‹ ', t('reports')),
    h('div', { class: 'row' }, h('h1', null, t('report')), h('span', { class: `astate rs-${r.status}`, 'data-testid': 'report-status' }, t('rs_' + r.status))),
    h('p', { class: 'sub' }, c.unit.name, ' · ', c.unit.site, ' · ', c.period_label || `${day(c.period_start)} – ${day(c.period_end)}`),
    h('p', { class: 'headline', 'data-testid': 'report-headline' }, pick(c, 'headline')),
    r.note ? h('blockquote', { class: 'note', 'data-testid': 'report-note' }, h('b', null, t('engineer_note')), h('br'), r.note) : '',
    r.signed_at ? h('p', { class: 'sub' }, t('signed_by', { w: r.signer, t: when(r.signed_at) })) : '',
    h('a', { class: 'btn', href: `/api/v1/reports/${r.id}/pdf?lang=${lang}`, download: `report-${r.id}.pdf`, 'data-testid': 'report-pdf' }, t('report_pdf')));
  const findings = h('section', { class: 'panel' }, h('h2', null, t('findings')),
    c.findings.length ? '' : h('p', null, t('findings_none')),
    c.findings.map((f) => h('article', { class: 'finding', 'data-testid': 'finding', 'data-key': f.key },
      h('h3', null, pick(f, 'title')),
      h('p', null, pick(f, 'summary')),
      h('p', { class: 'sub' }, h('b', null, worth(f, c.assumptions.currency)), ' · ', t('confidence'), ' ', f.confidence.toFixed(2)),
      evidenceChart(f.evidence),
      reviewing
        ? h('textarea', { rows: 3, 'data-testid': 'finding-advice', 'aria-label': t('advice'), oninput: (e) => advice.set(f.key, e.target.value) }, pick(f, 'advice'))
        : h('p', null, h('b', null, t('advice')), ' ', pick(f, 'advice')),
      h('p', { class: 'ref' }, pick(f, 'reference')),
      reviewing ? h('label', { class: 'check' }, h('input', { type: 'checkbox', 'data-testid': 'finding-drop',
        onchange: (e) => (e.target.checked ? drops.add(f.key) : drops.delete(f.key)) }), ' ', t('finding_drop')) : '')));
  const row = (label, a, b) => h('tr', null, h('th', null, label), h('td', null, a), h('td', null, b));
  const both = (f) => [f(k), f(p)];
  const figures = h('section', { class: 'panel' }, h('h2', null, t('operation')), h('table', { class: 'figs' },
    h('tr', null, h('th'), h('th', null, t('this_period')), h('th', null, t('previous_period'))),
    row(t('run_hours'), ...both((x) => `${num(x.run_hours, 0)} / ${num(x.hours, 0)}`)),
    row(t('starts'), ...both((x) => num(x.starts, 0))),
    row(t('energy_kwh') + (k.energy_estimated ? ' ' + t('estimated') : ''), ...both((x) => num(x.energy_kwh, 0))),
    row(t('compliance'), ...both((x) => num(x.setpoint_compliance == null ? null : x.setpoint_compliance * 100, 0, ' %'))),
    row(t('mean_load'), ...both((x) => num(x.mean_load_pct, 0, ' %'))),
    row(t('evap_approach'), ...both((x) => num(x.evap_approach_k, 1, ' K'))),
    row(t('cond_approach'), ...both((x) => num(x.cond_approach_k, 1, ' K'))),
    row(t('lift'), ...both((x) => num(x.lift_k, 1, ' K'))),
    row('ΔT', ...both((x) => num(x.delta_t_k, 1, ' K')))),
    c.fleet ? [h('h3', null, t('fleet_compare', { n: c.fleet.units })), h('table', { class: 'figs', 'data-testid': 'report-fleet' },
      h('tr', null, h('th'), h('th', null, t('this_unit')), h('th', null, t('fleet_median'))),
      row(t('cond_approach'), num(k.cond_approach_k, 1, ' K'), num(c.fleet.cond_approach_k, 1, ' K')),
      row(t('evap_approach'), num(k.evap_approach_k, 1, ' K'), num(c.fleet.evap_approach_k, 1, ' K')),
      row(t('lift'), num(k.lift_k, 1, ' K'), num(c.fleet.lift_k, 1, ' K')),
      row(t('compliance'), num(k.setpoint_compliance == null ? null : k.setpoint_compliance * 100, 0, ' %'),
        num(c.fleet.setpoint_compliance == null ? null : c.fleet.setpoint_compliance * 100, 0, ' %')),
      row(t('kwh_per_hour'), num(k.energy_kwh == null || !k.run_hours ? null : k.energy_kwh / k.run_hours, 0), num(c.fleet.kwh_per_run_hour, 0)))] : '',
    h('h3', null, t('load_profile')),
    h('table', { class: 'figs' }, k.load_profile.map((b) => row(b.to_pct >= 100 ? `≥ ${b.from_pct} %` : `${b.from_pct}–${b.to_pct} %`, num(b.hours, 0, ' h'), ''))));
  const events = h('section', { class: 'panel' }, h('h2', null, t('alarms')),
    c.alarms.length ? h('ul', null, c.alarms.map((a) => h('li', null, when(a.raised_at), ' · ', t('grade_n', { n: a.grade }), ' · ', pick(a, 'title')))) : h('p', { class: 'sub' }, '–'),
    h('h2', null, t('tickets')),
    c.tickets.length ? h('ul', null, c.tickets.map((x) => h('li', null, when(x.opened_at), ' · #', x.id, ' ', x.title, ' · ',
      x.response_minutes == null ? '–' : t('responded_in', { m: Math.round(x.response_minutes), a: Math.round(x.allowed_minutes) })))) : h('p', { class: 'sub' }, '–'));
  let review = '';
  if (reviewing) {
    const note = h('textarea', { rows: 3, 'data-testid': 'report-note-input', placeholder: t('engineer_note'), 'aria-label': t('engineer_note') }, r.note || '');
    const body = () => {
      const edits = {};
      for (const [key, text] of advice) edits[key] = { [lang === 'zh' ? 'advice_zh' : 'advice']: text };
      return { note: note.value, drop: [...drops], edits };
    };
    const send = async (e, sign) => {
      const b = e.currentTarget; b.disabled = true;
      try {
        await api(`/api/v1/reports/${r.id}`, { method: 'PATCH', body: body() });
        if (sign) await api(`/api/v1/reports/${r.id}/sign`, { method: 'POST' });
        toast(t(sign ? 'report_signed' : 'saved'));
        ctx.rerender();
      } catch (err) { b.disabled = false; toast(t('error', { e: err.message }), true); }
    };
    review = h('section', { class: 'panel' }, h('h2', null, t('review')), note, h('div', { class: 'actions' },
      h('button', { class: 'btn', 'data-testid': 'report-save', onclick: (e) => send(e, false) }, t('save')),
      h('button', { class: 'btn primary', 'data-testid': 'report-sign', onclick: (e) => send(e, true) }, t('report_sign'))));
  }
  main.replaceChildren(head, findings, review, figures, events);
}
