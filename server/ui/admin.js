// The service organisation's management screens, loaded on first use: the gateways with their
// configuration's state, and provisioning; one gateway's configuration held by the server (what
// it should run against what it runs, every version, the editor), its site (owner, password,
// maintenance windows, units) and its paging (contacts, rotation, policies by grade); a unit's
// rule overrides, maintenance and share links; the people who can be paged; the on-call
// rotations with who is on call when; organisations, users and invitations; the team's chat
// rooms that get a site's alarms. And, for every signed-in user, their own notifications: how
// they are paged, quiet hours, push on this device.
import { api, h, session, canManagePaging } from './api.js';
import { t, lang, when } from './i18n.js';
import { toast, unitName, title as ruleTitle } from './views.js';

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
    rows.length ? h('div', { class: 'cards' }, rows) : h('p', { class: 'sub' }, t('gateways_none')), next),
    canManagePaging() ? provisionPanel(ctx) : '');
}

/** Provisioning: a new gateway's id in, its password (once) and files out. */
function provisionPanel(ctx) {
  const id = h('input', { type: 'text', maxlength: 64, pattern: '[A-Za-z0-9_\\-]{1,64}', 'data-testid': 'provision-id', placeholder: 'plant-a-gw1', autocapitalize: 'off' });
  const problem = problemLine('provision-error');
  const out = h('div');
  const panel = h('section', { class: 'panel' }, h('h2', null, t('provision')), h('p', { class: 'sub' }, t('provision_help')),
    field(t('gateway_id'), id), problem,
    h('button', { class: 'btn primary', 'data-testid': 'provision-save', onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      problem.hidden = true;
      try {
        const made = await api('/api/v1/gateways', { body: { id: id.value.trim() } });
        out.replaceChildren(credentials(ctx, made));
        id.value = '';
      } catch (err) {
        problem.textContent = err.message;
        problem.hidden = false;
      }
      button.disabled = false;
    } }, t('provision_do')), out);
  return panel;
}

/** A gateway's password, shown this once, with its configuration and secret files to download;
 * gone from the page and the browser's memory with "Done" or on leaving the page. */
function credentials(ctx, made) {
  const urls = [];
  const forget = () => { urls.splice(0).forEach((u) => URL.revokeObjectURL(u)); box.remove(); };
  const file = (name, text, key) => {
    urls.push(URL.createObjectURL(new Blob([text], { type: 'text/plain' })));
    return h('a', { class: 'btn', download: name, 'data-testid': key, href: urls[urls.length - 1] }, t('download', { f: name }));
  };
  const box = h('div', { class: 'once', 'data-testid': 'provisioned' },
    h('p', { class: 'warn' }, t('password_once', { id: made.gateway_id })),
    h('p', null, h('code', { class: 'secret', 'data-testid': 'provisioned-password' }, made.password)),
    h('div', { class: 'row' }, file('gateway.toml', made.gateway_toml, 'download-config'), file('gateway.secret', made.password + '\n', 'download-secret')),
    h('p', { class: 'sub' }, t('install_help')),
    h('details', null, h('summary', null, t('external_broker')), h('code', { class: 'secret' }, made.mosquitto_password_line)),
    h('button', { class: 'btn', 'data-testid': 'provisioned-done', onclick: forget }, t('done')));
  ctx.cleanups.push(forget);
  return box;
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
  const [paging, site, chat] = await Promise.all([pagingPanels(ctx, id), sitePanels(ctx, id, c.organisation_id), chatPanel(ctx, id)]);
  if (!ctx.alive()) return;
  main.replaceChildren(status, ...site, editor, history, ...paging, chat);
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

/** The management hub: every screen, for service staff; and the user's own API tokens. */
export async function admin(main, ctx) {
  const tokens = await api('/api/v1/tokens');
  if (!ctx.alive()) return;
  document.title = t('manage') + ' · Chillcloud';
  const link = (href, key, sub) => h('a', { class: 'item', href, 'data-testid': 'manage-' + key }, h('b', null, t(key)), h('p', { class: 'sub' }, t(sub)));
  main.replaceChildren(h('section', { class: 'panel' }, h('h1', null, t('manage')), h('div', { class: 'cards' },
    link('#/gateways', 'gateways', 'gateways_sub'),
    link('#/people', 'people', 'people_sub'),
    link('#/rotations', 'rotations', 'rotations_sub'),
    session.user?.role === 'admin' ? link('#/accounts', 'accounts', 'accounts_sub') : '',
    link('#/me/notifications', 'notifications', 'notifications_sub'))), tokenPanel(ctx, tokens));
}

/** The user's API tokens for integrations: each acts as them; made (shown once) and revoked here. */
function tokenPanel(ctx, tokens) {
  const name = h('input', { type: 'text', maxlength: 100, 'data-testid': 'token-name' });
  const problem = problemLine('token-error');
  const out = h('div');
  return h('section', { class: 'panel' }, h('h2', null, t('tokens')), h('p', { class: 'sub' }, t('tokens_help')),
    h('ul', { class: 'versions' }, tokens.map((k) => h('li', { 'data-testid': 'token' }, h('b', null, k.name),
      h('p', { class: 'sub' }, when(k.created_at), ' · ', k.last_used_at ? t('token_used', { t: when(k.last_used_at) }) : t('token_unused')),
      h('button', { class: 'btn small', 'data-testid': 'token-revoke', onclick: async () => {
        try { await api(`/api/v1/tokens/${k.id}`, { method: 'DELETE' }); toast(t('saved')); ctx.rerender(); } catch (err) { toast(err.message, true); }
      } }, t('revoke'))))),
    field(t('token_name'), name), problem,
    h('button', { class: 'btn primary', 'data-testid': 'token-save', onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      problem.hidden = true;
      try {
        const made = await api('/api/v1/tokens', { body: { name: name.value.trim() } });
        out.replaceChildren(h('div', { class: 'once' }, h('p', { class: 'warn' }, t('token_once')),
          h('p', null, h('code', { class: 'secret', 'data-testid': 'token-secret' }, made.token))));
      } catch (err) {
        problem.textContent = err.message;
        problem.hidden = false;
      }
      button.disabled = false;
    } }, t('token_make')), out);
}

/** A labelled form field. */
const field = (label, input) => h('label', { class: 'field' }, h('span', null, label), input);

/** A form's submit: runs `send`, shows a refusal under the form, re-renders on success. */
function submit(ctx, key, send, problem, label = t('save')) {
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
  }, label);
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
    r.overrides.length ? h('p', { class: 'sub' }, t('overrides'), ' ', r.overrides.map((o) => `${who(o.person_id)} ${when(o.starts_at)} – ${when(o.ends_at)}`).join('; ')) : '',
    canManagePaging() ? standIn(ctx, r, persons) : ''));
  const panels = [h('section', { class: 'panel' }, h('a', { class: 'back', href: '#/admin' }, '‹ ', t('manage')),
    h('h1', null, t('rotations')), cards.length ? '' : h('p', { class: 'sub' }, t('rotations_none'))), ...cards];
  if (canManagePaging()) {
    const name = h('input', { type: 'text', maxlength: 100, 'data-testid': 'rotation-name' });
    const period = h('select', { 'data-testid': 'rotation-period' }, h('option', { value: 7 }, t('weekly')), h('option', { value: 1 }, t('daily')));
    // The handover: this week's Monday 08:00 local time by default.
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

/** Someone else on call in a rotation for a while (leave, sickness, a swap). */
function standIn(ctx, rotation, persons) {
  const person = h('select', { 'data-testid': 'standin-person' }, persons.map((p) => h('option', { value: p.id }, p.name)));
  const from = new Date();
  from.setMinutes(0, 0, 0);
  const starts = h('input', { type: 'datetime-local', 'data-testid': 'standin-start', value: localInput(from) });
  const ends = h('input', { type: 'datetime-local', 'data-testid': 'standin-end', value: localInput(new Date(from.getTime() + 24 * 3600e3)) });
  const problem = problemLine('standin-error');
  return h('details', { class: 'grade-policy' }, h('summary', null, t('standin_add')),
    field(t('person'), person), field(t('from_time'), starts), field(t('to_time'), ends), problem,
    submit(ctx, 'standin-save', () => api(`/api/v1/rotations/${rotation.id}/overrides`, { body: {
      person_id: +person.value, starts_at: new Date(starts.value).toISOString(), ends_at: new Date(ends.value).toISOString(),
    } }), problem));
}

const AUDIENCES = ['on_call', 'service', 'owner', 'manager', 'chat'];
/** A level's own channels (none: each person's own); a list the server holds beyond these stays as it is. */
const VIA = ['', 'voice', 'sms', 'push', 'email'];

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
    const held = (level.via || []).join(',');
    const via = h('select', { 'data-testid': `g${grade}-via`, disabled: !manage, onchange: () => { changed = true; } },
      [...new Set([...VIA, held])].map((v) => h('option', { value: v, selected: v === held },
        v ? v.split(',').map((c) => t('ch_' + c)).join(' + ') : t('via_own'))));
    const row = h('div', { class: 'level' }, field(t('after_min'), after), h('div', { class: 'checks' }, boxes), field(t('via'), via));
    rows.push({ after, boxes, via });
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
      levels: rows.map((r) => ({ after_s: (+r.after.value || 0) * 60, notify: r.boxes.map((b) => b.firstChild).filter((c) => c.checked).map((c) => c.value),
        ...(r.via.value ? { via: r.via.value.split(',') } : {}) }))
        .filter((l) => l.notify.length).sort((a, b) => a.after_s - b.after_s),
      repeat_s: repeat.value === '' || +repeat.value === 0 ? null : +repeat.value * 60,
    }),
  };
}

const KINDS = ['wecom', 'dingtalk', 'feishu', 'slack'];
/** The chat apps whose robots take a signing secret. */
const SIGNED = new Set(['dingtalk', 'feishu']);

/** The team's group chats that get this site's alarms (its own, and those of every site); for
 * those who manage paging, a test message to each, a form to add one and a way to delete one.
 * The robot's address and secret go in once and are never shown again. */
async function chatPanel(ctx, id) {
  const panel = h('section', { class: 'panel', 'data-testid': 'chat-rooms' }, h('h2', null, t('chat_rooms')), h('p', { class: 'sub' }, t('chat_help')));
  let rooms;
  try {
    rooms = await api(`/api/v1/chat-rooms?gateway=${enc(id)}`);
  } catch (err) {
    panel.append(h('p', { class: 'warn' }, err.status === 0 ? t('offline') : t('error', { e: err.message })));
    return panel;
  }
  const manage = canManagePaging();
  // A button that runs `run`, with a refusal as a toast.
  const act = (key, label, run) => h('button', { class: 'btn small', 'data-testid': key, onclick: async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    try { await run(); } catch (err) { toast(err.status === 0 ? t('offline') : err.message, true); }
    button.disabled = false;
  } }, label);
  const room = (r) => h('li', { 'data-testid': 'chat-room', 'data-room-id': r.id },
    h('div', { class: 'row' }, h('b', null, r.name),
      r.gateway_id == null ? h('span', { class: 'astate', 'data-testid': `chat-all-sites-${r.id}` }, t('chat_all_sites')) : ''),
    h('p', { class: 'sub' }, [t('kind_' + r.kind), r.language === 'zh' ? '中文' : 'English', r.signed ? t('chat_signed') : ''].filter(Boolean).join(' · ')),
    r.url_hint ? h('p', { class: 'sub' }, h('code', null, r.url_hint)) : '',
    manage ? h('div', { class: 'row start' },
      act(`chat-test-${r.id}`, t('chat_test'), async () => {
        await api(`/api/v1/chat-rooms/${r.id}/test`, { method: 'POST' });
        toast(t('chat_test_sent'));
      }),
      act(`chat-delete-${r.id}`, t('chat_delete'), async () => {
        if (!confirm(t(r.gateway_id == null ? 'chat_delete_all' : 'chat_delete_q', { name: r.name }))) return;
        await api(`/api/v1/chat-rooms/${r.id}`, { method: 'DELETE' });
        toast(t('saved'));
        ctx.rerender();
      })) : '');
  // This site's own first, then those of every site.
  const sorted = rooms.slice().sort((a, b) => (a.gateway_id == null) - (b.gateway_id == null) || a.name.localeCompare(b.name));
  panel.append(sorted.length ? h('ul', { class: 'versions' }, sorted.map(room)) : h('p', { class: 'sub' }, t('chat_none')));
  if (!manage) return panel;

  const secret = h('input', { type: 'text', maxlength: 200, 'data-testid': 'chat-secret', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false', placeholder: 'SEC…' });
  const secretField = field(t('chat_secret'), secret);
  const kind = h('select', { 'data-testid': 'chat-kind', onchange: () => { secretField.hidden = !SIGNED.has(kind.value); } },
    KINDS.map((k) => h('option', { value: k }, t('kind_' + k))));
  secretField.hidden = !SIGNED.has(kind.value);
  const name = h('input', { type: 'text', maxlength: 100, 'data-testid': 'chat-name' });
  const url = h('input', { type: 'url', maxlength: 1000, 'data-testid': 'chat-url', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false', placeholder: 'https://…' });
  const scope = h('select', { 'data-testid': 'chat-scope' }, h('option', { value: id }, t('chat_this_site', { id })), h('option', { value: '' }, t('chat_all_sites')));
  const language = h('select', { 'data-testid': 'chat-language' },
    h('option', { value: 'zh', selected: lang === 'zh' }, '中文'), h('option', { value: 'en', selected: lang !== 'zh' }, 'English'));
  const problem = problemLine('chat-error');
  panel.append(h('h3', null, t('chat_add')), field(t('chat_kind'), kind), field(t('chat_name'), name), field(t('chat_url'), url), secretField,
    field(t('lang_field'), language), field(t('chat_scope'), scope), problem,
    submit(ctx, 'chat-add', () => api('/api/v1/chat-rooms', { body: {
      gateway_id: scope.value || null, kind: kind.value, name: name.value.trim(), url: url.value.trim(),
      secret: SIGNED.has(kind.value) && secret.value.trim() ? secret.value.trim() : null, language: language.value,
    } }), problem, t('chat_add_do')));
  return panel;
}

/** A datetime-local input's value for `date` in local time. */
function localInput(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** Maintenance windows (of a site, or of one unit) and a form to add one. */
function maintenancePanel(ctx, gatewayId, windows, units, unitId) {
  const name = (uid) => { const u = units.find((x) => x.id === uid); return u ? unitName(u) : t('whole_site'); };
  const list = windows.filter((w) => unitId == null || w.unit_id == null || w.unit_id === unitId);
  const panel = h('section', { class: 'panel' }, h('h2', null, t('maintenance')),
    list.length ? h('ul', { class: 'versions' }, list.map((w) => h('li', { 'data-testid': 'maintenance-window' },
      h('b', null, name(w.unit_id)), ' ', h('span', { class: 'sub' }, when(w.starts_at), ' – ', when(w.ends_at)),
      w.reason ? h('p', { class: 'sub' }, w.reason) : ''))) : h('p', { class: 'sub' }, t('maintenance_none')));
  const unit = h('select', { 'data-testid': 'maintenance-unit' }, unitId == null ? h('option', { value: '' }, t('whole_site')) : '',
    units.filter((u) => unitId == null || u.id === unitId).map((u) => h('option', { value: u.id }, unitName(u))));
  const start = new Date();
  start.setMinutes(0, 0, 0);
  const starts = h('input', { type: 'datetime-local', 'data-testid': 'maintenance-start', value: localInput(start) });
  const ends = h('input', { type: 'datetime-local', 'data-testid': 'maintenance-end', value: localInput(new Date(start.getTime() + 4 * 3600e3)) });
  const reason = h('input', { type: 'text', maxlength: 200, 'data-testid': 'maintenance-reason' });
  const problem = problemLine('maintenance-error');
  panel.append(h('h3', null, t('maintenance_add')), field(t('unit_field'), unit), field(t('from_time'), starts), field(t('to_time'), ends),
    field(t('reason'), reason), problem,
    submit(ctx, 'maintenance-save', () => api(`/api/v1/gateways/${enc(gatewayId)}/maintenance`, { body: {
      unit_id: unit.value ? +unit.value : null, starts_at: new Date(starts.value).toISOString(),
      ends_at: new Date(ends.value).toISOString(), reason: reason.value.trim(),
    } }), problem));
  return panel;
}

/** A gateway's site: owner organisation (administrators), a new password, maintenance, units. */
async function sitePanels(ctx, id, ownerId) {
  const admin = session.user?.role === 'admin';
  const [units, windows, organisations] = await Promise.all([api(`/api/v1/units?gateway=${enc(id)}`),
    api(`/api/v1/gateways/${enc(id)}/maintenance`), admin ? api('/api/v1/organisations') : []]);
  const site = h('section', { class: 'panel' }, h('h2', null, t('site')),
    units.length ? h('div', { class: 'cards' }, units.map((u) => h('a', { class: 'item', href: `#/settings/${u.id}`, 'data-testid': 'site-unit' },
      h('b', null, unitName(u)), h('p', { class: 'sub' }, [u.profile, u.model].filter(Boolean).join(' · '), ' · ', t('unit_settings')))))
      : h('p', { class: 'sub' }, t('units_none')));
  if (admin) {
    const owner = h('select', { 'data-testid': 'site-owner' }, h('option', { value: '' }, t('no_owner')),
      organisations.filter((o) => o.kind === 'customer').map((o) => h('option', { value: o.id, selected: o.id === ownerId }, o.name)));
    const problem = problemLine('owner-error');
    site.append(field(t('owner_org'), owner), problem, submit(ctx, 'owner-save', () => api(`/api/v1/gateways/${enc(id)}/organisation`,
      { method: 'PUT', body: { organisation_id: owner.value ? +owner.value : null } }), problem));
  }
  if (canManagePaging()) {
    const out = h('div');
    site.append(h('button', { class: 'btn', 'data-testid': 'renew-password', onclick: async (e) => {
      if (!confirm(t('renew_confirm', { id }))) return;
      const button = e.currentTarget;
      button.disabled = true;
      try { out.replaceChildren(credentials(ctx, await api(`/api/v1/gateways/${enc(id)}/password`, { method: 'POST' }))); } catch (err) { toast(err.message, true); }
      button.disabled = false;
    } }, t('renew_password')), out);
  }
  return [site, maintenancePanel(ctx, id, windows, units, null)];
}

/** A unit's settings: its rules with overrides, maintenance windows and share links. */
export async function settings(main, ctx) {
  const unitId = +ctx.id;
  const [u, view, shares] = await Promise.all([api(`/api/v1/units/${unitId}`), api(`/api/v1/units/${unitId}/rules`),
    api(`/api/v1/units/${unitId}/shares`)]);
  const windows = await api(`/api/v1/gateways/${enc(u.gateway_id)}/maintenance`);
  if (!ctx.alive()) return;
  document.title = unitName(u) + ' · Chillcloud';
  const head = h('section', { class: 'panel' }, h('a', { class: 'back', href: `#/gateway/${enc(u.gateway_id)}` }, '‹ ', u.gateway_id),
    h('h1', null, unitName(u)), h('p', { class: 'sub' }, [u.profile, u.model].filter(Boolean).join(' · ')));
  main.replaceChildren(head, rulesPanel(ctx, unitId, view), maintenancePanel(ctx, u.gateway_id, windows, [u], unitId), sharePanel(ctx, unitId, shares));
}

/** The unit's rules in force, its overrides (each can be reset), and an editor per rule. */
function rulesPanel(ctx, unitId, view) {
  const path = (key) => `/api/v1/units/${unitId}/rules/${enc(key)}`;
  const mine = view.overrides.filter(([u]) => u === unitId);
  const overrides = h('ul', { class: 'versions' }, mine.map(([, key, patch]) => h('li', { 'data-testid': 'rule-override', 'data-key': key },
    h('b', null, key), ' ', h('code', null, patch === null ? t('rule_off') : JSON.stringify(patch)), ' ',
    h('button', { class: 'btn small', 'data-testid': 'rule-reset', onclick: async () => {
      try { await api(path(key), { method: 'DELETE' }); toast(t('saved')); ctx.rerender(); } catch (err) { toast(err.message, true); }
    } }, t('rule_reset')))));
  const rows = view.rules.map((r) => {
    const grade = h('select', { 'data-testid': 'rule-grade' }, [1, 2, 3, 4].map((g) => h('option', { value: g, selected: g === r.grade }, t('grade_n', { n: g }))));
    const off = h('input', { type: 'checkbox', 'data-testid': 'rule-off' });
    const { key, title, title_zh, grade: _g, ...rest } = r;
    const more = h('textarea', { rows: 3, class: 'code', spellcheck: 'false', 'data-testid': 'rule-fields', 'aria-label': t('rule_fields') }, JSON.stringify(rest));
    const problem = problemLine('rule-error');
    return h('details', { class: 'grade-policy', 'data-testid': 'rule', 'data-key': key },
      h('summary', null, h('span', { class: `grade g${r.grade}` }, h('b', null, r.grade)), ' ', h('span', null, ruleTitle(r), ' ', h('small', { class: 'sub' }, key))),
      field(t('grade_field'), grade), h('label', { class: 'check' }, off, ' ', t('rule_off')), field(t('rule_fields'), more), problem,
      submit(ctx, 'rule-save', async () => {
        let patch = null;
        if (!off.checked) {
          let fields;
          try { fields = JSON.parse(more.value || '{}'); } catch (_) { throw new Error(t('rule_json')); }
          // Only what differs from the rule in force goes into the override.
          patch = { grade: +grade.value, ...fields };
          for (const k of Object.keys(patch)) if (JSON.stringify(patch[k]) === JSON.stringify(r[k])) delete patch[k];
          if (!Object.keys(patch).length) throw new Error(t('rule_same'));
        }
        await api(path(key), { method: 'PUT', body: patch });
      }, problem));
  });
  const skipped = view.skipped.length ? h('p', { class: 'sub' }, t('rules_skipped'), ' ', view.skipped.map(([k, why]) => `${k} (${why})`).join('; ')) : '';
  return h('section', { class: 'panel' }, h('h2', null, t('rules')), h('p', { class: 'sub' }, t('rules_help')),
    mine.length ? overrides : '', rows, skipped);
}

/** The unit's share links: each with who made it and until when; make one (its address is shown
 * once) or revoke one. */
function sharePanel(ctx, unitId, shares) {
  const live = shares.filter((s) => !s.revoked_at && new Date(s.expires_at) > new Date());
  const list = h('ul', { class: 'versions' }, live.map((s) => h('li', { 'data-testid': 'share-link' },
    h('b', null, s.label), h('p', { class: 'sub' }, s.created_by, ' · ', t('until', { t: when(s.expires_at) })),
    h('button', { class: 'btn small', 'data-testid': 'share-revoke', onclick: async () => {
      try { await api(`/api/v1/shares/${s.id}`, { method: 'DELETE' }); toast(t('saved')); ctx.rerender(); } catch (err) { toast(err.message, true); }
    } }, t('revoke')))));
  const label = h('input', { type: 'text', maxlength: 100, 'data-testid': 'share-label' });
  const days = h('input', { type: 'number', min: 1, max: 90, value: 14, 'data-testid': 'share-days' });
  const problem = problemLine('share-error');
  const out = h('div');
  const none = h('p', { class: 'sub', hidden: live.length > 0 }, t('shares_none'));
  return h('section', { class: 'panel' }, h('h2', null, t('shares')), h('p', { class: 'sub' }, t('shares_help')), list, none,
    field(t('share_label'), label), field(t('share_days'), days), problem,
    h('button', { class: 'btn primary', 'data-testid': 'share-save', onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      problem.hidden = true;
      try {
        const made = await api(`/api/v1/units/${unitId}/shares`, { body: { label: label.value.trim(), days: +days.value } });
        out.replaceChildren(h('div', { class: 'once' }, h('p', { class: 'warn' }, t('share_once')),
          h('p', null, h('a', { href: made.url, 'data-testid': 'share-url', target: '_blank', rel: 'noopener' }, made.url))));
        list.append(h('li', { 'data-testid': 'share-link' }, h('b', null, made.link.label)));
        none.hidden = true;
      } catch (err) {
        problem.textContent = err.message;
        problem.hidden = false;
      }
      button.disabled = false;
    } }, t('share_make')), out);
}

const ROLES = { service: ['admin', 'manager', 'engineer', 'sales'], customer: ['owner', 'duty'] };

/** Organisations, users and invitations (administrators). */
export async function accounts(main, ctx) {
  const [orgs, users, audit] = await Promise.all([api('/api/v1/organisations'), api('/api/v1/users'), api('/api/v1/audit')]);
  if (!ctx.alive()) return;
  document.title = t('accounts') + ' · Chillcloud';
  const orgName = (id) => orgs.find((o) => o.id === id)?.name || `#${id}`;
  const orgList = h('ul', { class: 'versions' }, orgs.map((o) => h('li', { 'data-testid': 'organisation' }, h('b', null, o.name), ' · ', t('org_' + o.kind))));
  const oName = h('input', { type: 'text', maxlength: 200, 'data-testid': 'org-name' });
  const oKind = h('select', { 'data-testid': 'org-kind' }, ['customer', 'service'].map((k) => h('option', { value: k }, t('org_' + k))));
  const oProblem = problemLine('org-error');
  const orgPanel = h('section', { class: 'panel' }, h('a', { class: 'back', href: '#/admin' }, '‹ ', t('manage')), h('h1', null, t('accounts')),
    h('h2', null, t('organisations')), orgList, h('h3', null, t('org_add')), field(t('org_name'), oName), field(t('org_kind'), oKind), oProblem,
    submit(ctx, 'org-save', () => api('/api/v1/organisations', { body: { name: oName.value.trim(), kind: oKind.value } }), oProblem));

  const userList = h('ul', { class: 'versions' }, users.map((u) => h('li', { 'data-testid': 'user', 'data-login': u.login },
    h('b', null, u.name), ' ', h('span', { class: 'sub' }, u.login, ' · ', t('role_' + u.role), ' · ', orgName(u.organisation_id), ' · ',
      u.disabled ? t('user_disabled') : u.active ? t('user_active') : t('user_invited')),
    u.id !== session.user?.id && !u.disabled ? h('button', { class: 'btn small', 'data-testid': 'user-disable', onclick: async () => {
      if (!confirm(t('disable_confirm', { name: u.name }))) return;
      try { await api(`/api/v1/users/${u.id}/disable`, { method: 'POST' }); toast(t('saved')); ctx.rerender(); } catch (err) { toast(err.message, true); }
    } }, t('disable')) : '')));
  const login = h('input', { type: 'text', maxlength: 100, 'data-testid': 'user-login', autocapitalize: 'off' });
  const name = h('input', { type: 'text', maxlength: 100, 'data-testid': 'user-name' });
  const org = h('select', { 'data-testid': 'user-org' }, orgs.map((o) => h('option', { value: o.id }, o.name)));
  const role = h('select', { 'data-testid': 'user-role' });
  const fillRoles = () => {
    const kind = orgs.find((o) => o.id === +org.value)?.kind || 'service';
    role.replaceChildren(...ROLES[kind].map((r) => h('option', { value: r }, t('role_' + r))));
  };
  org.addEventListener('change', fillRoles);
  fillRoles();
  const language = h('select', { 'data-testid': 'user-language' }, h('option', { value: 'zh' }, '中文'), h('option', { value: 'en' }, 'English'));
  const problem = problemLine('user-error');
  const out = h('div');
  const userPanel = h('section', { class: 'panel' }, h('h2', null, t('users')), userList, h('h3', null, t('invite')),
    field(t('login'), login), field(t('name'), name), field(t('organisation'), org), field(t('role'), role), field(t('lang_field'), language), problem,
    h('button', { class: 'btn primary', 'data-testid': 'user-save', onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      problem.hidden = true;
      try {
        const made = await api('/api/v1/users', { body: { login: login.value.trim(), name: name.value.trim(), role: role.value,
          organisation_id: +org.value, language: language.value } });
        out.replaceChildren(h('div', { class: 'once' }, h('p', { class: 'warn' }, t('invite_once', { login: made.login })),
          h('p', null, h('code', { class: 'secret', 'data-testid': 'invitation-url' }, made.invitation_url))));
      } catch (err) {
        problem.textContent = err.message;
        problem.hidden = false;
      }
      button.disabled = false;
    } }, t('invite_do')), out);
  const auditPanel = h('section', { class: 'panel' }, h('h2', null, t('audit')), h('p', { class: 'sub' }, t('audit_help')),
    h('ul', { class: 'versions' }, audit.slice(0, 100).map((a) => h('li', { 'data-testid': 'audit-entry' },
      h('b', null, a.action), ' ', h('span', { class: /^(ok|2\d\d)$/.test(a.outcome) ? 'sub' : 'warn' }, a.outcome),
      h('p', { class: 'sub' }, a.actor || '–', ' · ', when(a.at), a.address ? ' · ' + a.address : '')))));
  main.replaceChildren(orgPanel, userPanel, auditPanel);
}

/* ---------------------------------------------------------------- every user: their own notifications */

const CHANNELS = ['push', 'sms', 'voice', 'email'];
/** Where this browser keeps the server's id of its push subscription, by the subscription's endpoint. */
const PUSH_ID = 'cc.push:';
const stored = {
  get: (k) => { try { return localStorage.getItem(k); } catch (_) { return null; } },
  set: (k, v) => { try { localStorage.setItem(k, String(v)); } catch (_) { /* private mode */ } },
  drop: (k) => { try { localStorage.removeItem(k); } catch (_) { /* private mode */ } },
};
/** Base64url text to bytes, and bytes (an ArrayBuffer or a typed array) to base64url text. */
function fromB64u(text) {
  const b64 = text.replace(/=+$/, '').replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}
const toB64u = (b) => btoa(String.fromCharCode(...new Uint8Array(b.buffer ? b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) : b)))
  .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
/** A promise, or a refusal after `ms` (a push service that never answers leaves subscribe() hanging). */
const within = (promise, ms, message) => Promise.race([promise, new Promise((_, no) => setTimeout(() => no(new Error(message)), ms))]);
/** The service worker's registration, or null when it has not started within 10 s. */
const registration = () => within(navigator.serviceWorker.ready, 10e3, '').catch(() => null);
/** A device in a few words, from its browser's user agent. */
function device(ua) {
  if (!ua) return '?';
  const system = /\(([^)]*)\)/.exec(ua)?.[1].replace(/^Linux; |; K$|^Macintosh; |; wv$/g, '') || '';
  const browser = /(MicroMessenger|EdgA?|Firefox|FxiOS|SamsungBrowser|HuaweiBrowser|MiuiBrowser|CriOS|Chrome|Version)\/(\d+)/.exec(ua);
  return [system, browser ? `${browser[1] === 'Version' ? 'Safari' : browser[1]} ${browser[2]}` : ''].filter(Boolean).join(' · ');
}

/** `#/me/notifications`: how this user is paged (the channels in order, quiet hours and time
 * zone), a test message by each channel, and push on this device. Anyone on a paging list. */
export async function me(main, ctx) {
  if (ctx.id !== 'notifications') throw { status: 404 };
  document.title = t('notifications') + ' · Chillcloud';
  let p;
  try {
    p = await api('/api/v1/me/paging');
  } catch (err) {
    if (err.status !== 404) throw err;
    if (ctx.alive()) {
      main.replaceChildren(h('section', { class: 'panel' }, h('h1', null, t('notifications')),
        h('p', { class: 'msg', 'data-testid': 'not-paged' }, t('np_not_listed'))));
    }
    return;
  }
  if (!ctx.alive()) return;

  // The ticked channels in order; edits stay until saved, whatever the server says meanwhile.
  const chosen = (p.channels || []).filter((c) => CHANNELS.includes(c));
  const results = Object.fromEntries(CHANNELS.map((c) => [c, h('p', { class: 'sub', role: 'status', 'data-testid': 'test-result-' + c })]));
  const list = h('div', { class: 'chans', 'data-testid': 'channels' });
  const saved = h('p', { class: 'ok-line', role: 'status', 'data-testid': 'notifications-saved' });
  function paintChannels(focus) {
    list.replaceChildren(...CHANNELS.map((c) => {
      const i = chosen.indexOf(c), on = i >= 0, ok = !!p.available?.[c];
      const box = h('input', { type: 'checkbox', checked: on, disabled: !ok && !on, 'data-testid': 'channel-' + c, onchange: (e) => {
        if (e.target.checked) chosen.push(c); else chosen.splice(chosen.indexOf(c), 1);
        paintChannels('channel-' + c);
      } });
      return h('div', { class: 'chan' + (ok ? '' : ' na'), 'data-channel': c },
        h('div', { class: 'row' }, h('label', { class: 'check' }, box, h('b', null, t('ch_' + c)))),
        ok ? '' : h('p', { class: on ? 'warn' : 'sub', 'data-testid': 'channel-why-' + c }, t('ch_na_' + c)),
        h('div', { class: 'row start' }, h('button', { class: 'btn small', 'data-testid': 'test-' + c, disabled: !ok, onclick: (e) => test(e, c) }, t('test_send')),
          results[c]));
    }));
    if (focus) list.querySelector(`[data-testid="${focus}"]`)?.focus();
  }
  async function test(e, c) {
    const button = e.currentTarget, line = results[c];
    button.disabled = true;
    line.className = 'sub';
    line.textContent = t('sending');
    try {
      await api('/api/v1/me/paging/test', { body: { channel: c } });
      line.textContent = t('test_sent');
    } catch (err) {
      line.className = 'warn';
      line.textContent = err.status === 0 ? t('offline') : err.message;
    }
    button.disabled = !p.available?.[c];
  }

  // Quiet hours, in the user's time zone (this phone's unless they chose another).
  const q = p.quiet_hours;
  const from = h('input', { type: 'time', value: q?.from || '22:00', disabled: !q, required: true, 'data-testid': 'quiet-from' });
  const to = h('input', { type: 'time', value: q?.to || '07:00', disabled: !q, required: true, 'data-testid': 'quiet-to' });
  const quietOn = h('input', { type: 'checkbox', checked: !!q, 'data-testid': 'quiet-on', onchange: () => { from.disabled = to.disabled = !quietOn.checked; } });
  const here = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const zone = p.timezone || here;
  let zones = [];
  try { zones = Intl.supportedValuesOf('timeZone'); } catch (_) { /* an older browser: a text field */ }
  const tz = zones.length
    ? h('select', { 'data-testid': 'timezone' }, [...new Set([...zones, zone, here])].sort().map((z) => h('option', { value: z, selected: z === zone }, z.replaceAll('_', ' '))))
    : h('input', { type: 'text', maxlength: 64, value: zone, autocapitalize: 'off', spellcheck: 'false', 'data-testid': 'timezone' });

  const problem = problemLine('notifications-error');
  const save = h('button', { class: 'btn primary', 'data-testid': 'save-notifications', onclick: async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    problem.hidden = true;
    saved.textContent = '';
    try {
      p = await api('/api/v1/me/paging', { method: 'PUT', body: {
        channels: [...chosen], quiet_hours: quietOn.checked ? { from: from.value, to: to.value } : null, timezone: tz.value.trim(),
      } });
      if (!ctx.alive()) return;
      chosen.splice(0, chosen.length, ...(p.channels || []).filter((c) => CHANNELS.includes(c)));
      paintChannels();
      paintPush();
      saved.textContent = t('saved');
      toast(t('saved'));
    } catch (err) {
      problem.textContent = err.status === 0 ? t('offline') : err.message;
      problem.hidden = false;
    }
    button.disabled = false;
  } }, t('save'));
  const form = h('section', { class: 'panel', 'data-testid': 'paging-settings', oninput: () => { saved.textContent = ''; }, onchange: () => { saved.textContent = ''; } },
    h('h1', null, t('notifications')), p.name ? h('p', { class: 'sub' }, t('np_for', { name: p.name })) : '',
    h('p', { class: 'note' }, t('np_policy')),
    h('h2', null, t('np_channels')), h('p', { class: 'sub' }, t('np_all')), list,
    h('h2', { class: 'gap' }, t('quiet')), h('label', { class: 'check big' }, quietOn, ' ', t('quiet_on')),
    h('div', { class: 'pair' }, field(t('from_time'), from), field(t('to_time'), to)), field(t('timezone'), tz),
    problem, save, saved);

  // Push on this device: the browser's subscription, sent to the server and remembered here by
  // its endpoint, so that turning it off removes the right one.
  const pushBox = h('div', { 'data-testid': 'push' });
  const pushPanel = h('section', { class: 'panel' }, h('h2', null, t('push_title')), h('p', { class: 'sub' }, t('push_help')), pushBox);
  const supported = 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
  const sameKey = (sub) => { const k = sub.options?.applicationServerKey; return !k || toB64u(k) === p.push_key.replace(/=+$/, ''); };
  const known = (id) => id && (p.subscriptions || []).some((s) => String(s.id) === String(id));
  const refresh = async () => { p = await api('/api/v1/me/paging'); };
  async function register(sub) {
    const made = await api('/api/v1/me/push', { body: sub.toJSON() });
    stored.set(PUSH_ID + sub.endpoint, made.id);
  }
  // What the last push action left to say: a hint, or why it failed (kept across repaints).
  let pushSeq = 0, note = '', pushProblem = '';
  async function paintPush() {
    const my = ++pushSeq;
    const state = (st, text, cls = 'sub') => h('p', { class: cls, role: 'status', 'data-testid': 'push-state', 'data-state': st }, text);
    const problemText = h('p', { class: 'warn', role: 'alert', 'data-testid': 'push-error', hidden: !pushProblem }, pushProblem);
    const fail = (err) => {
      pushProblem = err.status === 0 ? t('offline') : t('push_failed', { e: err.message || err.name });
      problemText.textContent = pushProblem;
      problemText.hidden = false;
    };
    let sub = null, reg = null;
    if (supported && p.push_key) {
      reg = await registration();
      sub = reg && await reg.pushManager.getSubscription().catch(() => null);
      // A subscription made for another server key is of no use; one the server does not know
      // (removed there, or this browser's memory of it lost) is sent again.
      if (sub && !sameKey(sub)) { await sub.unsubscribe().catch(() => {}); sub = null; }
      if (sub && !known(stored.get(PUSH_ID + sub.endpoint))) {
        try { await register(sub); await refresh(); } catch (_) { /* shown as on; the server says otherwise next time */ }
      }
      if (my !== pushSeq || !ctx.alive()) return;
    }
    const thisId = sub && stored.get(PUSH_ID + sub.endpoint);
    const devices = (p.subscriptions || []).map((s) => h('li', { 'data-testid': 'push-device', 'data-id': s.id },
      h('div', { class: 'row' }, h('span', { class: 'dev', title: s.user_agent || '' }, device(s.user_agent),
        String(s.id) === String(thisId) ? h('b', null, ' · ', t('push_this')) : ''),
      String(s.id) === String(thisId) ? '' : h('button', { class: 'btn small', 'data-testid': `push-remove-${s.id}`, onclick: async (e) => {
        const button = e.currentTarget;
        button.disabled = true;
        pushProblem = '';
        try { await api(`/api/v1/me/push/${enc(s.id)}`, { method: 'DELETE' }); } catch (err) { if (err.status !== 404) { fail(err); button.disabled = false; return; } }
        await refresh().catch(() => {});
        if (ctx.alive()) { paintChannels(); paintPush(); }
      } }, t('push_remove'))),
      h('p', { class: 'sub' }, when(s.created_at))));
    const parts = [];
    if (!supported) parts.push(state('unsupported', t('push_unsupported'), 'warn'));
    else if (!p.push_key) parts.push(state('unconfigured', t('push_no_key'), 'warn'));
    else if (!reg) parts.push(state('no-worker', t('push_no_sw'), 'warn'));
    else if (sub) {
      parts.push(state('on', t('push_on'), 'ok-line'), note ? h('p', { class: 'note', 'data-testid': 'push-note' }, note) : '',
        h('button', { class: 'btn', 'data-testid': 'push-disable', onclick: async (e) => {
          const button = e.currentTarget;
          button.disabled = true;
          pushProblem = '';
          const id = stored.get(PUSH_ID + sub.endpoint);
          try {
            await sub.unsubscribe().catch(() => {});
            stored.drop(PUSH_ID + sub.endpoint);
            if (id) await api(`/api/v1/me/push/${enc(id)}`, { method: 'DELETE' }).catch((err) => { if (err.status !== 404) throw err; });
            await refresh();
          } catch (err) { fail(err); }
          note = '';
          if (ctx.alive()) { paintChannels(); paintPush(); }
        } }, t('push_disable')));
    } else if (Notification.permission === 'denied') parts.push(state('denied', t('push_denied'), 'warn'));
    else {
      parts.push(state('off', t('push_off')), h('button', { class: 'btn primary', 'data-testid': 'push-enable', onclick: async (e) => {
        const button = e.currentTarget;
        button.disabled = true;
        problemText.hidden = true;
        pushProblem = '';
        try {
          // Older Safari answers by callback, newer browsers by promise.
          const permission = await new Promise((answer) => { const r = Notification.requestPermission(answer); if (r?.then) r.then(answer); });
          if (permission !== 'granted') throw new Error(t('push_denied'));
          const ready = await registration();
          if (!ready) throw new Error(t('push_no_sw'));
          let made = await ready.pushManager.getSubscription();
          if (made && !sameKey(made)) { await made.unsubscribe().catch(() => {}); made = null; }
          made ||= await within(ready.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: fromB64u(p.push_key) }), 30e3, t('push_timeout'));
          await register(made);
          await refresh();
          if (!ctx.alive()) return;
          // Push can page them once it is among their channels: ticked here, saved by them.
          if (!chosen.includes('push')) { chosen.push('push'); note = t('push_save_hint'); } else note = '';
          paintChannels();
          paintPush();
        } catch (err) {
          fail(err);
          button.disabled = false;
        }
      } }, t('push_enable')));
    }
    pushBox.replaceChildren(...parts, problemText,
      devices.length ? h('h3', null, t('push_devices')) : '', devices.length ? h('ul', { class: 'versions' }, devices) : '');
  }

  paintChannels();
  pushBox.replaceChildren(h('p', { class: 'sub' }, t('loading')));
  main.replaceChildren(form, pushPanel);
  await paintPush();
}
