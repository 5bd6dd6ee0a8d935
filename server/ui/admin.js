// The service organisation's management screens, loaded on first use: the gateways with their
// configuration's state; one gateway's configuration held by the server (what it should run
// against what it runs, every version, the editor) and its paging (contacts, rotation, policies
// by grade); the people who can be paged; the on-call rotations with who is on call when.
import { api, h, canManagePaging } from './api.js';
import { t, when } from './i18n.js';
import { toast } from './views.js';

const enc = encodeURIComponent;

const stateBadge = (st) => h('span', { class: `astate gs-${st}`, 'data-testid': 'config-state' }, t('gs_' + st));

/** The fleet's gateways, 200 a page. */
export async function gateways(main, ctx) {
  const after = ctx.q.get('after');
  const list = await api('/api/v1/gateways' + (after ? `?after=${encodeURIComponent(after)}` : ''));
  if (!ctx.alive()) return;
  document.title = t('gateways') + ' · Chillcloud';
  const rows = list.map((g) => h('a', { class: 'item', href: `#/gateway/${encodeURIComponent(g.id)}`, 'data-testid': 'gateway-row' },
    h('div', { class: 'row' }, h('b', null, g.id), stateBadge(g.config_state)),
    h('p', { class: 'sub' }, g.online ? t('online') : t('offline_since', { t: g.last_seen ? when(g.last_seen) : '–' }),
      ' · ', t('n_units', { n: g.units }), g.organisation ? ' · ' + g.organisation : '')));
  const next = list.length === 200
    ? h('a', { class: 'btn', href: `#/gateways?after=${encodeURIComponent(list[list.length - 1].id)}` }, t('next_page')) : '';
  main.replaceChildren(h('section', { class: 'panel' }, h('a', { class: 'back', href: '#/admin' }, '‹ ', t('manage')), h('h1', null, t('gateways')),
    rows.length ? h('div', { class: 'cards' }, rows) : h('p', { class: 'sub' }, t('gateways_none')), next));
}

/** One gateway's configuration: desired against running, drift, versions, and the editor. */
export async function gateway(main, ctx) {
  const id = ctx.id;
  const c = await api(`/api/v1/gateways/${encodeURIComponent(id)}/config`);
  if (!ctx.alive()) return;
  document.title = id + ' · Chillcloud';
  await editorAndHistory(main, ctx, id, c, statusPanel(id, c));
}

/** What the gateway should run against what it runs. */
function statusPanel(id, c) {
  const d = c.desired;
  return h('section', { class: 'panel', 'data-testid': 'config-status' },
    h('a', { class: 'back', href: '#/gateways' }, '‹ ', t('gateways')),
    h('div', { class: 'row' }, h('h1', null, id), stateBadge(c.state)),
    h('p', { class: 'sub' }, c.online ? t('online') : t('offline')),
    h('dl', { class: 'facts' },
      h('dt', null, t('cfg_desired')), h('dd', { 'data-testid': 'config-desired' }, d ? t('cfg_version', { n: d.version }) : t('cfg_local')),
      h('dt', null, t('cfg_running')), h('dd', { 'data-testid': 'config-running' },
        c.running_version ? t('cfg_version', { n: c.running_version }) : t('cfg_local'),
        c.reported_at ? ` (${when(c.reported_at)})` : '')),
    c.drift ? h('p', { class: 'warn', 'data-testid': 'config-drift' }, t('cfg_drift')) : '',
    d && d.outcome_reason ? h('p', { class: 'warn', 'data-testid': 'config-reason' }, d.outcome_reason) : '');
}

async function editorAndHistory(main, ctx, id, c, status) {
  const d = c.desired;
  const text = h('textarea', { rows: 16, spellcheck: 'false', class: 'code', 'data-testid': 'config-text', 'aria-label': t('cfg_text') },
    d ? d.site_toml : t('cfg_template'));
  const note = h('input', { type: 'text', maxlength: 500, 'data-testid': 'config-note', 'aria-label': t('cfg_note'), placeholder: t('cfg_note') });
  const problem = h('p', { class: 'warn', 'data-testid': 'config-error', hidden: true });
  const save = h('button', {
    class: 'btn primary', 'data-testid': 'config-save',
    onclick: async (e) => {
      // The event's currentTarget is gone once the handler awaits.
      const button = e.currentTarget;
      button.disabled = true;
      problem.hidden = true;
      try {
        const made = await api(`/api/v1/gateways/${encodeURIComponent(id)}/config`, {
          method: 'PUT', body: { site_toml: text.value, note: note.value, base_version: d ? d.version : 0 },
        });
        toast(t('cfg_sent', { n: made.version }));
        ctx.rerender();
      } catch (err) {
        problem.textContent = err.message;
        problem.hidden = false;
        button.disabled = false;
      }
    },
  }, t('cfg_save'));
  const editor = h('section', { class: 'panel' }, h('h2', null, t('cfg_edit')), h('p', { class: 'sub' }, t('cfg_help')),
    text, note, problem, save);

  const all = d ? [d, ...c.versions] : c.versions;
  const history = h('section', { class: 'panel' }, h('h2', null, t('cfg_history')),
    all.length ? h('ol', { class: 'versions' }, all.map((v) => h('li', { 'data-testid': 'config-version' },
      h('div', { class: 'row' }, h('b', null, t('cfg_version', { n: v.version })),
        v.outcome ? h('span', { class: `astate co-${v.outcome}` }, t('co_' + v.outcome)) : ''),
      h('p', { class: 'sub' }, v.changed_by, ' · ', when(v.created_at), v.note ? ' · ' + v.note : ''),
      v.outcome_reason ? h('p', { class: 'sub' }, v.outcome_reason) : ''))) : h('p', { class: 'sub' }, t('cfg_none')));
  const paging = await pagingPanels(ctx, id);
  if (!ctx.alive()) return;
  main.replaceChildren(status, editor, history, ...paging);
  // What the gateway runs changes on its own (trial, rollback, reconnection): the status stays
  // current without touching what is being typed.
  let shown = status;
  const timer = setInterval(async () => {
    try {
      const now = await api(`/api/v1/gateways/${encodeURIComponent(id)}/config`);
      if (!ctx.alive()) return;
      const fresh = statusPanel(id, now);
      shown.replaceWith(fresh);
      shown = fresh;
    } catch (_) { /* next time */ }
  }, 5000);
  ctx.cleanups.push(() => clearInterval(timer));
}

/** The management hub: every screen, for service staff. */
export async function admin(main) {
  document.title = t('manage') + ' · Chillcloud';
  const link = (href, key, sub) => h('a', { class: 'item', href, 'data-testid': 'manage-' + key }, h('b', null, t(key)), h('p', { class: 'sub' }, t(sub)));
  main.replaceChildren(h('section', { class: 'panel' }, h('h1', null, t('manage')), h('div', { class: 'cards' },
    link('#/gateways', 'gateways', 'gateways_sub'),
    link('#/people', 'people', 'people_sub'),
    link('#/rotations', 'rotations', 'rotations_sub'))));
}

/** A labelled form field. */
const field = (label, input) => h('label', { class: 'field' }, h('span', null, label), input);

/** A form's submit: runs `send`, shows a refusal under the form, re-renders on success. */
function submit(ctx, key, send, problem) {
  return h('button', {
    class: 'btn primary', 'data-testid': key,
    onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      problem.hidden = true;
      try {
        await send();
        toast(t('saved'));
        ctx.rerender();
      } catch (err) {
        problem.textContent = err.message;
        problem.hidden = false;
        button.disabled = false;
      }
    },
  }, t('save'));
}

const problemLine = (key) => h('p', { class: 'warn', 'data-testid': key, hidden: true });

/** Everyone who can be paged, and a form to add someone. */
export async function people(main, ctx) {
  const list = await api('/api/v1/people');
  if (!ctx.alive()) return;
  document.title = t('people') + ' · Chillcloud';
  const rows = list.map((p) => h('li', { 'data-testid': 'person-row' }, h('b', null, p.name),
    h('p', { class: 'sub' }, [p.phone, p.email, p.language === 'zh' ? '中文' : 'English'].filter(Boolean).join(' · '))));
  const panels = [h('section', { class: 'panel' }, h('a', { class: 'back', href: '#/admin' }, '‹ ', t('manage')),
    h('h1', null, t('people')), rows.length ? h('ul', { class: 'versions' }, rows) : h('p', { class: 'sub' }, t('people_none')))];
  if (canManagePaging()) {
    const name = h('input', { type: 'text', maxlength: 100, 'data-testid': 'person-name', autocomplete: 'name' });
    const phone = h('input', { type: 'tel', maxlength: 16, 'data-testid': 'person-phone', placeholder: '+8613800138000', autocomplete: 'tel' });
    const email = h('input', { type: 'email', maxlength: 254, 'data-testid': 'person-email', autocomplete: 'email' });
    const language = h('select', { 'data-testid': 'person-language' }, h('option', { value: 'zh' }, '中文'), h('option', { value: 'en' }, 'English'));
    const problem = problemLine('person-error');
    panels.push(h('section', { class: 'panel' }, h('h2', null, t('person_add')),
      field(t('name'), name), field(t('phone'), phone), field(t('email'), email), field(t('lang_field'), language), problem,
      submit(ctx, 'person-save', () => api('/api/v1/people', {
        body: { name: name.value.trim(), phone: phone.value.trim() || null, email: email.value.trim() || null, language: language.value },
      }), problem)));
  }
  main.replaceChildren(...panels);
}

/** The on-call rotations: who is on call now and in the coming turns; a form to add one. */
export async function rotations(main, ctx) {
  const [list, persons] = await Promise.all([api('/api/v1/rotations'), api('/api/v1/people')]);
  if (!ctx.alive()) return;
  document.title = t('rotations') + ' · Chillcloud';
  const who = (id) => persons.find((p) => p.id === id)?.name || `#${id}`;
  const cards = list.map((r) => h('article', { class: 'panel', 'data-testid': 'rotation', 'data-name': r.name },
    h('div', { class: 'row' }, h('h2', null, r.name), h('span', { class: 'sub' }, t(r.period_days === 7 ? 'weekly' : 'daily'))),
    h('p', null, t('on_call_now'), ' ', h('b', { 'data-testid': 'on-call-now' }, r.on_call_now ? who(r.on_call_now) : '–')),
    h('ol', { class: 'versions' }, r.turns.map((turn) => h('li', { 'data-testid': 'turn' },
      h('b', null, who(turn.person_id)), h('span', { class: 'sub' }, ' ', when(turn.starts_at), ' – ', when(turn.ends_at))))),
    r.overrides.length ? h('p', { class: 'sub' }, t('overrides'), ' ', r.overrides.map((o) => `${who(o.person_id)} ${when(o.starts_at)} – ${when(o.ends_at)}`).join('; ')) : ''));
  const panels = [h('section', { class: 'panel' }, h('a', { class: 'back', href: '#/admin' }, '‹ ', t('manage')),
    h('h1', null, t('rotations')), cards.length ? '' : h('p', { class: 'sub' }, t('rotations_none'))), ...cards];
  if (canManagePaging()) {
    const name = h('input', { type: 'text', maxlength: 100, 'data-testid': 'rotation-name' });
    const period = h('select', { 'data-testid': 'rotation-period' }, h('option', { value: 7 }, t('weekly')), h('option', { value: 1 }, t('daily')));
    // The handover: next Monday 08:00 local time by default.
    const start = new Date();
    start.setDate(start.getDate() - ((start.getDay() + 6) % 7));
    start.setHours(8, 0, 0, 0);
    const pad = (n) => String(n).padStart(2, '0');
    const starts = h('input', { type: 'datetime-local', 'data-testid': 'rotation-start',
      value: `${start.getFullYear()}-${pad(start.getMonth() + 1)}-${pad(start.getDate())}T08:00` });
    // Members in the order they are ticked: that is the order of their turns.
    const order = [];
    const members = h('div', { class: 'checks' }, persons.map((p) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', 'data-testid': 'rotation-member', 'data-name': p.name,
        onchange: (e) => { const i = order.indexOf(p.id); if (e.target.checked && i < 0) order.push(p.id); if (!e.target.checked && i >= 0) order.splice(i, 1); } }),
      ' ', p.name)));
    const problem = problemLine('rotation-error');
    panels.push(h('section', { class: 'panel' }, h('h2', null, t('rotation_add')),
      field(t('name'), name), field(t('period'), period), field(t('handover'), starts),
      h('p', { class: 'sub' }, t('members_order')), members, problem,
      submit(ctx, 'rotation-save', () => api('/api/v1/rotations', {
        body: { name: name.value.trim(), period_days: +period.value, starts_at: new Date(starts.value).toISOString(), members: order },
      }), problem)));
  }
  main.replaceChildren(...panels);
}

const AUDIENCES = ['on_call', 'service', 'owner', 'manager'];

/** A site's contacts and paging (rotation, policy by grade), under its gateway's page. */
async function pagingPanels(ctx, id) {
  const [paging, contacts, persons, rotationList] = await Promise.all([
    api(`/api/v1/gateways/${enc(id)}/paging`), api(`/api/v1/gateways/${enc(id)}/contacts`),
    api('/api/v1/people'), api('/api/v1/rotations')]);
  const who = (pid) => persons.find((p) => p.id === pid)?.name || `#${pid}`;
  const manage = canManagePaging();
  const contactList = h('ul', { class: 'versions' }, contacts.map((c) => h('li', { 'data-testid': 'contact' }, h('b', null, who(c.person_id)), ' · ', t('role_' + c.role))));
  const contactPanel = h('section', { class: 'panel' }, h('h2', null, t('contacts')), contacts.length ? contactList : h('p', { class: 'sub' }, t('contacts_none')));
  if (manage) {
    const person = h('select', { 'data-testid': 'contact-person' }, persons.map((p) => h('option', { value: p.id }, p.name)));
    const role = h('select', { 'data-testid': 'contact-role' }, ['owner', 'service', 'manager'].map((r) => h('option', { value: r }, t('role_' + r))));
    const problem = problemLine('contact-error');
    contactPanel.append(field(t('person'), person), field(t('role'), role), problem,
      submit(ctx, 'contact-save', () => api(`/api/v1/gateways/${enc(id)}/contacts`, { body: { person_id: +person.value, role: role.value } }), problem));
  }
  const rotation = h('select', { 'data-testid': 'paging-rotation', disabled: !manage },
    h('option', { value: '' }, t('no_rotation')),
    rotationList.map((r) => h('option', { value: r.id, selected: r.id === paging.rotation_id }, r.name)));
  const grades = [1, 2, 3, 4].map((g) => gradeEditor(g, paging.grades[g], !!paging.policy?.grades?.[g], manage));
  const problem = problemLine('paging-error');
  const pagingPanel = h('section', { class: 'panel' }, h('h2', null, t('paging')), field(t('rotation'), rotation),
    h('p', { class: 'sub' }, t('policy_help')), grades.map((g) => g.element), problem,
    manage ? submit(ctx, 'paging-save', () => {
      const own = {};
      for (const g of grades) if (g.changed()) own[g.grade] = g.value();
      return api(`/api/v1/gateways/${enc(id)}/paging`, { method: 'PUT', body: {
        rotation_id: rotation.value ? +rotation.value : null,
        policy: Object.keys(own).length || paging.policy ? { grades: { ...(paging.policy?.grades || {}), ...own } } : null,
      } });
    }, problem) : '');
  return [contactPanel, pagingPanel];
}

/** One grade's escalation: levels (minutes after the start, who they add) and the repeat. */
function gradeEditor(grade, policy, own, manage) {
  const rows = [];
  const levels = h('div', { class: 'levels' });
  let changed = false;
  const addLevel = (level) => {
    const after = h('input', { type: 'number', min: 0, step: 1, value: Math.round(level.after_s / 60), 'data-testid': `g${grade}-after`, disabled: !manage, oninput: () => { changed = true; } });
    const boxes = AUDIENCES.map((a) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: a, checked: level.notify.includes(a),
      'data-testid': `g${grade}-${a}`, disabled: !manage, onchange: () => { changed = true; } }), ' ', t('aud_' + a)));
    const row = h('div', { class: 'level' }, field(t('after_min'), after), h('div', { class: 'checks' }, boxes));
    rows.push({ after, boxes });
    levels.append(row);
  };
  policy.levels.forEach(addLevel);
  const repeat = h('input', { type: 'number', min: 0, step: 1, value: policy.repeat_s ? Math.round(policy.repeat_s / 60) : '', disabled: !manage,
    'data-testid': `g${grade}-repeat`, oninput: () => { changed = true; } });
  const element = h('details', { class: 'grade-policy', 'data-testid': `grade-${grade}` },
    h('summary', null, h('span', { class: `grade g${grade}` }, h('b', null, grade)), ' ', t('grade_n', { n: grade }), own ? ' · ' + t('own_policy') : ''),
    levels,
    manage ? h('button', { class: 'btn small', 'data-testid': `g${grade}-add-level`, onclick: () => { changed = true; addLevel({ after_s: 0, notify: [] }); } }, t('add_level')) : '',
    field(t('repeat_min'), repeat));
  return {
    grade, element,
    changed: () => changed,
    value: () => ({
      levels: rows.map((r) => ({ after_s: (+r.after.value || 0) * 60, notify: r.boxes.map((b) => b.firstChild).filter((c) => c.checked).map((c) => c.value) }))
        .filter((l) => l.notify.length).sort((a, b) => a.after_s - b.after_s),
      repeat_s: repeat.value === '' || +repeat.value === 0 ? null : +repeat.value * 60,
    }),
  };
}
