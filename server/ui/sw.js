// Chillcloud service worker: caches the app shell only (never API responses), so the
// dashboard opens at once and can be installed. Cached files are served first and refreshed
// in the background, so a new version shows on the next open.
const CACHE = 'chillcloud-shell-v1';
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
