// Chillcloud's dashboard: the shell (header, tabs), hash routing, and start-up.
import { api, session, loadSession, setSession, setOnUnauthorized, canTickets, h, icon } from './api.js';
import { t, initLang, toggleLang } from './i18n.js';
import * as V from './views.js';

const main = document.getElementById('main');
const head = document.getElementById('top');
const tabs = document.getElementById('tabs');
// Alarms and tickets load on first use, so a unit page loads less.
const VIEWS = { '': V.fleet, unit: V.unit, signin: V.signin, alarms: 0, alarm: 0, tickets: 0, ticket: 0, reports: 1, report: 1, admin: 2, gateways: 2, gateway: 2, people: 2, rotations: 2, settings: 2, accounts: 2, me: 2 };
// Views loaded on first use, by module.
const MODULES = { 0: './work.js', 1: './doctor.js', 2: './admin.js' };
// The management screens, under one tab.
const MANAGE = new Set(['admin', 'gateways', 'gateway', 'people', 'rotations', 'settings', 'accounts']);
let gen = 0, cleanups = [], returnTo = '#/', badgeCount = null;

function parse() {
  const [path, q] = (location.hash.slice(1) || '/').split('?');
  const parts = path.split('/').filter(Boolean);
  return { name: parts[0] || '', id: parts[1] && decodeURIComponent(parts[1]), q: new URLSearchParams(q || '') };
}

function badge(n) {
  badgeCount = n;
  const b = document.getElementById('badge');
  if (b) { b.textContent = n > 99 ? '99+' : n; b.hidden = !n; }
}

function shell(name) {
  const signed = !!session.user;
  head.replaceChildren(
    h('a', { class: 'brand', href: '#/' }, h('img', { src: '/ui/icon.svg', alt: '', width: 28, height: 28 }), h('span', null, 'Chillcloud')),
    // Everyone's own notification settings, behind their name.
    signed ? h('a', { class: 'who', href: '#/me/notifications', 'data-testid': 'nav-me', 'aria-current': name === 'me' ? 'page' : null,
      'aria-label': `${t('notifications')}: ${session.user.name}` }, icon('bell'), h('span', null, session.user.name)) : h('span', { class: 'who' }),
    h('button', { class: 'hbtn', 'data-testid': 'lang-toggle', 'aria-label': 'Language / 语言', onclick: () => { toggleLang(); route(true); } }, t('lang_other')),
    signed ? h('button', { class: 'hbtn', 'data-testid': 'signout', onclick: signout }, t('signout')) : '');
  tabs.hidden = !signed;
  const tab = (href, key, active, ic, extra) =>
    h('a', { href, class: 'tab', 'aria-current': active ? 'page' : null, 'data-testid': 'nav-' + key }, icon(ic), h('span', null, t(key)), extra);
  tabs.replaceChildren(
    tab('#/', 'units', name === '' || name === 'unit', 'running'),
    tab('#/alarms', 'alarms', name.startsWith('alarm'), 'alarm', h('b', { id: 'badge', class: 'badge', hidden: !badgeCount }, badgeCount || '')),
    canTickets() ? tab('#/tickets', 'tickets', name.startsWith('ticket'), 'stale') : '',
    tab('#/reports', 'reports', name.startsWith('report'), 'stopped'),
    canTickets() ? tab('#/admin', 'manage', MANAGE.has(name), 'gateway') : '');
}

async function route(keep) {
  for (const f of cleanups.splice(0)) try { f(); } catch (_) { /* gone anyway */ }
  const r = parse();
  const my = ++gen;
  if (!session.user && r.name !== 'signin') { returnTo = location.hash || '#/'; location.replace('#/signin'); return; }
  if (session.user && r.name === 'signin') { location.replace(returnTo || '#/'); return; }
  // A message's link to one alarm may say alarms/<id>.
  if (r.name === 'alarms' && r.id) { location.replace(`#/alarm/${encodeURIComponent(r.id)}`); return; }
  shell(r.name);
  let view = VIEWS[r.name];
  if ((r.name.startsWith('ticket') || MANAGE.has(r.name)) && !canTickets()) view = null;
  if (view === undefined || view === null) { main.replaceChildren(V.errorBox({ status: 404 })); return; }
  if (!keep) { main.replaceChildren(h('p', { class: 'loading' }, t('loading'))); window.scrollTo?.(0, 0); }
  if (view in MODULES) view = (await import(MODULES[view]).catch(() => ({})))[r.name] || (() => { throw { status: 0 }; });
  if (my !== gen) return;
  const ctx = {
    id: r.id, q: r.q, cleanups, badge,
    alive: () => my === gen,
    rerender: () => { if (my === gen) route(true); },
    signin: () => { returnTo = location.hash; setSession(null); location.hash = '#/signin'; },
    signedIn: () => { location.replace(returnTo && returnTo !== '#/signin' ? returnTo : '#/'); },
  };
  try {
    await view(main, ctx);
  } catch (e) {
    if (my === gen && e.status !== 401) main.replaceChildren(V.errorBox(e, route));
  }
}

async function signout() {
  try { await api('/api/v1/session', { method: 'DELETE', quiet401: true }); } catch (_) { /* signed out either way */ }
  setSession(null);
  returnTo = '#/';
  location.hash = '#/signin';
}

setOnUnauthorized(() => {
  if (parse().name !== 'signin') { returnTo = location.hash; location.hash = '#/signin'; }
});

async function boot() {
  try {
    const user = await loadSession();
    initLang(user?.language);
  } catch (e) {
    initLang();
    shell('');
    tabs.hidden = true;
    main.replaceChildren(V.errorBox(e, boot));
    return;
  }
  window.addEventListener('hashchange', () => route());
  route();
}
V.startTicker();
boot();

// Installable: the service worker caches the app shell only, and shows push messages.
if ('serviceWorker' in navigator) {
  // A tapped notification opens its page here when the worker could not navigate this tab.
  navigator.serviceWorker.addEventListener('message', (e) => {
    const url = e.data && e.data.navigate && new URL(e.data.navigate, location.href);
    if (url && url.origin === location.origin) location.href = url.href;
  });
  addEventListener('load', () => {
    navigator.serviceWorker.register('/ui/sw.js', { scope: '/' })
      .catch(() => navigator.serviceWorker.register('/ui/sw.js').catch(() => {}));
  });
}
