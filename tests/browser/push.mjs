// Push on a phone (360 x 740) in Debian's Chromium: a user turns on push on their notifications
// screen, the server pushes an alarm to the subscription, the service worker shows it with an
// "Acknowledge" button, and pressing it acknowledges the alarm by its signed link. Run by the
// Rust test of push paging, whose fake push service decrypts what the server sends.
//
// Headless Chromium cannot subscribe to a local push service (its PushManager only speaks to
// Google's), so the page's PushManager is stubbed to hand out FAKE_SUBSCRIPTION, and the payload
// the fake push service received is delivered to the service worker over CDP, as a push service
// would. Nor can it click a system notification: the worker gets the real notificationclick
// event, dispatched inside it.
//
// Environment: BASE_URL, LOGIN, PASSWORD, ARTIFACTS, FAKE_SUBSCRIPTION (the JSON of
// PushSubscription.toJSON()), PUSH_INBOX (the file the payload arrives in), RESULT_FILE (written
// with {"acknowledged_tag"} at the end). Prints one line per step; exits non-zero on the first
// failure.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { phone, steps } from './phone.mjs';

const { BASE_URL, LOGIN, PASSWORD, FAKE_SUBSCRIPTION, PUSH_INBOX, RESULT_FILE, ARTIFACTS = '.' } = process.env;
for (const [name, value] of Object.entries({ BASE_URL, LOGIN, PASSWORD, FAKE_SUBSCRIPTION, PUSH_INBOX, RESULT_FILE })) {
  if (!value) { console.log(`FAILED setup: ${name} is not set`); process.exit(2); }
}
const BASE = BASE_URL.replace(/\/+$/, '');
const ORIGIN = new URL(BASE).origin;
mkdirSync(ARTIFACTS, { recursive: true });
const timeout = 20_000;
const { browser, context, page, problems } = await phone();
const { step, fitsThePhone } = steps({ browser, page, problems }, 'push', ARTIFACTS);

/** Polls `probe` until it returns something truthy, at most `ms`. */
async function poll(what, probe, ms = timeout) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** The service worker's notifications, as the page sees them. */
const notifications = (tag) => page.evaluate(async (t) => {
  const registration = await navigator.serviceWorker.ready;
  return (await registration.getNotifications(t ? { tag: t } : {})).map((n) => ({
    title: n.title, body: n.body, tag: n.tag, requireInteraction: n.requireInteraction, data: n.data,
    actions: (n.actions || []).map((a) => ({ action: a.action, title: a.title })),
  }));
}, tag);

// Before any script of the page: a PushManager that hands out the fake subscription, and
// remembers the server key it was asked for.
await context.addInitScript((fake) => {
  if (!('PushManager' in self)) return;
  const toB64u = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const fromB64u = (text) => Uint8Array.from(atob(text.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((text.length + 3) % 4)), (c) => c.charCodeAt(0));
  const bytes = (key) => (typeof key === 'string' ? fromB64u(key.replace(/=+$/, ''))
    : key instanceof ArrayBuffer ? new Uint8Array(key) : new Uint8Array(key.buffer, key.byteOffset, key.byteLength));
  let current = null;
  PushManager.prototype.subscribe = async function subscribe(options = {}) {
    const key = bytes(options.applicationServerKey || new Uint8Array());
    window.__pushKey = toB64u(key);
    current = {
      endpoint: fake.endpoint,
      expirationTime: null,
      options: { userVisibleOnly: !!options.userVisibleOnly, applicationServerKey: key.slice().buffer },
      getKey: (name) => (fake.keys && fake.keys[name] ? fromB64u(fake.keys[name]).buffer : null),
      unsubscribe: async () => { current = null; return true; },
      toJSON: () => JSON.parse(JSON.stringify(fake)),
    };
    return current;
  };
  PushManager.prototype.getSubscription = async function getSubscription() { return current; };
}, JSON.parse(FAKE_SUBSCRIPTION));
await context.grantPermissions(['notifications'], { origin: ORIGIN });

await step('01-push-on-this-device', async () => {
  await page.goto(`${BASE}/#/me/notifications`);
  await page.getByTestId('signin-login').fill(LOGIN);
  await page.getByTestId('signin-password').fill(PASSWORD);
  await page.getByTestId('signin-submit').click();
  await page.getByTestId('push-enable').click({ timeout });
  await page.locator('[data-testid=push-state][data-state=on]').waitFor({ timeout });
  const { key, asked } = await page.evaluate(async () => {
    const res = await fetch('/api/v1/me/paging', { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`GET /api/v1/me/paging: ${res.status}`);
    return { key: (await res.json()).push_key, asked: window.__pushKey };
  });
  if (!key || asked !== key.replace(/=+$/, '')) throw new Error(`subscribed with key ${asked}, the server's is ${key}`);
  if (await page.getByTestId('channel-push').isDisabled()) throw new Error('push is still unavailable as a channel after subscribing');
  await fitsThePhone();
});

let payload, text;
await step('02-the-server-pushes-and-the-worker-shows-it', async () => {
  // What the fake push service received, once it has all of it.
  await poll(`a push payload in ${PUSH_INBOX}`, () => {
    try {
      text = readFileSync(PUSH_INBOX, 'utf8');
      payload = JSON.parse(text);
      return true;
    } catch (_) {
      return false;
    }
  }, 60_000);
  if (!payload.tag) throw new Error(`the payload has no tag: ${text}`);
  if (!payload.ack) throw new Error(`the payload has no acknowledge link: ${text}`);
  // Delivered as a push service would: the worker's registration for the dashboard's scope.
  const cdp = await context.newCDPSession(page);
  const scope = `${ORIGIN}/`;
  const registrationId = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no service worker registration for ${scope}`)), timeout);
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const found = registrations.find((r) => r.scopeURL === scope && !r.isDeleted);
      if (found) { clearTimeout(timer); resolve(found.registrationId); }
    });
    cdp.send('ServiceWorker.enable').catch(reject);
  });
  await cdp.send('ServiceWorker.deliverPushMessage', { origin: ORIGIN, registrationId, data: text });
  const shown = await poll('the notification', async () => (await notifications(payload.tag))
    .find((n) => n.title === payload.title && n.body === payload.body && n.actions.some((a) => a.action === 'ack')));
  console.log(`notification: ${JSON.stringify(shown)}`);
  if (shown.data?.ack !== payload.ack) throw new Error(`the notification acknowledges by ${shown.data?.ack}, not ${payload.ack}`);
});

await step('03-acknowledge-from-the-notification', async () => {
  const tag = payload.tag;
  const ours = (w) => w.url().startsWith(`${ORIGIN}/ui/sw.js`);
  const worker = context.serviceWorkers().find(ours) || await context.waitForEvent('serviceworker', { predicate: ours, timeout });
  await worker.evaluate(async (t) => {
    const [n] = await self.registration.getNotifications({ tag: t });
    if (!n) throw new Error(`no notification tagged ${t} in the worker`);
    self.dispatchEvent(new NotificationEvent('notificationclick', { notification: n, action: 'ack' }));
  }, tag);
  const done = await poll('the acknowledged notification', async () => (await notifications(tag))
    .find((n) => n.body.includes('Acknowledged') && n.actions.length === 0));
  console.log(`acknowledged: ${JSON.stringify(done)}`);
  writeFileSync(RESULT_FILE, JSON.stringify({ acknowledged_tag: tag }));
});

if (problems.length) {
  console.log(`FAILED page problems: ${problems.join('; ')}`);
  process.exit(1);
}
await browser.close();
