// Benchmark P8: the first load of a unit page on a phone over 3G, in Debian's Chromium.
// Signs in (unthrottled), then loads the unit page cold (HTTP cache disabled, no service
// worker) RUNS times with the network throttled to PROFILE, and prints one JSON line per run:
// the bytes transferred (as on the wire: compressed, with headers) and the milliseconds from
// navigation to usable (the unit's values shown) and to the chart drawn.
//
// Environment: BASE, LOGIN, PASSWORD, UNIT_ID, RUNS (5), PROFILE (wpt-3g | chrome-fast-3g).

import { phone } from './phone.mjs';

const { BASE, LOGIN, PASSWORD, UNIT_ID, RUNS = '5', PROFILE = 'wpt-3g' } = process.env;
// WebPageTest's "3G" (1.6 Mbit/s down, 768 kbit/s up, 300 ms round trip) and Chrome's former
// "Fast 3G" preset (1.44 Mbit/s down, 675 kbit/s up, 562.5 ms), now called "Slow 4G".
const profiles = {
  'wpt-3g': { latency: 300, downloadThroughput: 1.6e6 / 8, uploadThroughput: 768e3 / 8 },
  'chrome-fast-3g': { latency: 562.5, downloadThroughput: 1.44e6 / 8, uploadThroughput: 675e3 / 8 },
};
const network = profiles[PROFILE];
if (!network) throw new Error(`unknown PROFILE ${PROFILE}`);

const { browser, context, page } = await phone({ serviceWorkers: 'block' });
await page.goto(`${BASE}/`);
await page.getByTestId('signin-login').fill(LOGIN);
await page.getByTestId('signin-password').fill(PASSWORD);
await page.getByTestId('signin-submit').click();
await page.getByTestId('unit-card').first().waitFor({ timeout: 20_000 });

const cdp = await context.newCDPSession(page);
await cdp.send('Network.enable');
await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
// Bytes per request: what a finished request took on the wire, or what an open one (the live
// event stream never finishes) has received so far.
const received = new Map();
const finished = new Map();
cdp.on('Network.dataReceived', (e) => received.set(e.requestId, (received.get(e.requestId) || 0) + e.encodedDataLength));
cdp.on('Network.loadingFinished', (e) => finished.set(e.requestId, e.encodedDataLength));
await cdp.send('Network.emulateNetworkConditions', { offline: false, ...network });

for (let run = 0; run < Number(RUNS); run++) {
  await page.goto('about:blank');
  received.clear();
  finished.clear();
  const started = Date.now();
  await page.goto(`${BASE}/#/unit/${UNIT_ID}`, { waitUntil: 'commit' });
  await page.locator('[data-testid=key-value], [data-testid=point-value]').first().waitFor({ timeout: 30_000 });
  const usable = Date.now() - started;
  await page.locator('svg.chart path.line').first().waitFor({ timeout: 30_000 });
  const chart = Date.now() - started;
  // A second's window after the chart, so what the page started on loading is counted too.
  await page.waitForTimeout(1000);
  let bytes = 0;
  for (const id of new Set([...received.keys(), ...finished.keys()])) bytes += finished.get(id) ?? received.get(id);
  console.log(JSON.stringify({ run, profile: PROFILE, usable_ms: usable, chart_ms: chart, bytes }));
}
await browser.close();
