// Chillcloud service worker: caches the app shell only (never API responses), so the
// dashboard opens at once and can be installed. Cached files are served first and refreshed
// in the background, so a new version shows on the next open. It also shows the server's push
// messages as notifications, whose "Acknowledge" button acknowledges the alarm by its signed
// link without opening the app.
const CACHE = 'chillcloud-shell-v2';
const SHELL = ['/', '/ui/boot.js', '/ui/app.js', '/ui/api.js', '/ui/i18n.js', '/ui/views.js', '/ui/chart.js', '/ui/work.js', '/ui/doctor.js', '/ui/admin.js',
  '/ui/app.css', '/ui/icon.svg', '/ui/manifest.webmanifest'];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith('chillcloud-') && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (e) => {
  const req = e.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin || !SHELL.includes(url.pathname)) return;
  const key = url.pathname;
  e.respondWith(caches.open(CACHE).then(async (cache) => {
    const cached = await cache.match(key);
    const fresh = fetch(key, { cache: 'no-cache', credentials: 'same-origin' }).then((res) => {
      if (res.ok && res.type === 'basic') cache.put(key, res.clone());
      return res;
    });
    if (cached) {
      e.waitUntil(fresh.catch(() => {}));
      return cached;
    }
    return fresh;
  }));
});

const ICON = '/ui/icon.svg';

// A push message: {title, body, tag, url, ack, ack_label, grade, renotify}, shown as a
// notification; grades 1 and 2 stay until the user acts on them.
self.addEventListener('push', (e) => {
  let m = {};
  try { m = e.data ? e.data.json() : {}; } catch (_) { m = { body: e.data ? e.data.text() : '' }; }
  const tag = m.tag || undefined;
  e.waitUntil(self.registration.showNotification(m.title || 'Chillcloud', {
    body: m.body || '', tag, icon: ICON, badge: ICON,
    data: { url: m.url || '/', ack: m.ack || null, tag: tag || null },
    actions: m.ack ? [{ action: 'ack', title: m.ack_label || 'Acknowledge / 确认' }] : [],
    requireInteraction: m.grade <= 2,
    // A browser refuses renotify without a tag.
    renotify: !!(m.renotify && tag),
  }));
});

/** Focuses a dashboard tab and shows `url` in it, or opens one. */
async function show(url) {
  const target = new URL(url || '/', self.location.origin);
  if (target.origin !== self.location.origin) return undefined;
  const open = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const tab = open.find((c) => new URL(c.url).origin === self.location.origin);
  if (!tab) return self.clients.openWindow(target.href);
  const focused = await tab.focus().catch(() => tab);
  // navigate() works only in a tab this worker controls; the app follows a message otherwise.
  try {
    if (await focused.navigate(target.href)) return undefined;
  } catch (_) { /* not controlled */ }
  focused.postMessage({ navigate: target.href });
  return undefined;
}

/** Keeps the worker alive for `work`; a synthetic event (a test's) cannot wait, the work goes on. */
function until(e, work) {
  try { e.waitUntil(work); } catch (_) { /* not trusted */ }
}

// The notification's button acknowledges by the signed link (no session needed), then says so in
// its place; a tap elsewhere on it opens the alarm.
self.addEventListener('notificationclick', (e) => {
  const n = e.notification;
  const d = n.data || {};
  n.close();
  if (e.action === 'ack' && d.ack) {
    const tag = d.tag || n.tag || undefined;
    until(e, fetch(d.ack, { method: 'POST', credentials: 'omit', cache: 'no-store' })
      .then((res) => res.ok, () => false)
      .then((ok) => self.registration.showNotification(n.title, {
        body: ok ? 'Acknowledged / 已确认' : 'Not acknowledged: tap to open / 未能确认：点击打开',
        tag, icon: ICON, badge: ICON, data: { url: d.url || '/', ack: null, tag: tag || null }, actions: [], requireInteraction: !ok,
      })));
    return;
  }
  until(e, show(d.url));
});
