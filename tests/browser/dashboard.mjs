// The dashboard in Debian's Chromium at a phone's viewport (360 x 740), as an owner uses it:
// sign in, the fleet at a glance, a unit's live value changing, an alarm acknowledged.
// Run by tests/tests/dashboard.rs, which starts the server and feeds the readings.
//
// Environment: BASE (the server's URL), LOGIN, PASSWORD, UNIT_ID (a unit whose point LIVE_POINT
// changes while this runs), ARTIFACTS (a directory for the screenshots).
// Prints one line per step; exits non-zero on the first failure.

import { mkdirSync } from 'node:fs';
import { phone } from './phone.mjs';

const { BASE, LOGIN, PASSWORD, UNIT_ID, LIVE_POINT = 'p1', ARTIFACTS = '.' } = process.env;
mkdirSync(ARTIFACTS, { recursive: true });
const timeout = 20_000;

// Refused requests (the sign-in probe, the wrong password) are the browser's console errors,
// not the page's: phone() skips them.
const { browser, page, problems } = await phone();

async function step(name, body) {
  try {
    await body();
    await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });
    console.log(`ok ${name}`);
  } catch (error) {
    await page.screenshot({ path: `${ARTIFACTS}/${name}-failed.png`, fullPage: true }).catch(() => {});
    console.log(`FAILED ${name}: ${error.message}`);
    for (const problem of problems) console.log(problem);
    await browser.close();
    process.exit(1);
  }
}

async function fitsThePhone() {
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  if (width > 360) throw new Error(`the page is ${width} px wide on a 360 px screen`);
}

await step('01-signin', async () => {
  await page.goto(`${BASE}/`);
  await page.getByTestId('signin-login').fill(LOGIN);
  await page.getByTestId('signin-password').fill('not the password');
  await page.getByTestId('signin-submit').click();
  await page.getByTestId('signin-error').waitFor({ timeout });
  await page.getByTestId('signin-password').fill(PASSWORD);
  await page.getByTestId('signin-submit').click();
  await page.getByTestId('unit-card').first().waitFor({ timeout });
});

await step('02-fleet', async () => {
  const cards = page.getByTestId('unit-card');
  const count = await cards.count();
  if (count !== 1) throw new Error(`the owner sees ${count} units, not their one`);
  const card = page.locator(`[data-testid=unit-card][data-unit-id="${UNIT_ID}"]`);
  const status = await card.getAttribute('data-status');
  if (status !== 'alarm') throw new Error(`the unit's status is ${status}, not alarm`);
  const word = (await card.getByTestId('status-word').innerText()).trim();
  if (!word) throw new Error('no status word on the card');
  await fitsThePhone();
});

await step('03-unit-live', async () => {
  await page.locator(`[data-testid=unit-card][data-unit-id="${UNIT_ID}"]`).click();
  const value = page.locator(`[data-testid=point-value][data-point-name="${LIVE_POINT}"]`);
  await value.waitFor({ timeout });
  const first = (await value.innerText()).trim();
  // The test publishes a new value every few hundred milliseconds: it must show without a reload.
  await page.waitForFunction(
    ([selector, before]) => { const e = document.querySelector(selector); return e && e.textContent.trim() !== before; },
    [`[data-testid=point-value][data-point-name="${LIVE_POINT}"]`, first],
    { timeout },
  );
  console.log(`live value ${first} -> ${(await value.innerText()).trim()}`);
  await page.locator('svg').first().waitFor({ timeout });
  await fitsThePhone();
});

await step('04-alarm-acknowledged', async () => {
  await page.goto(`${BASE}/#/alarms`);
  await page.getByTestId('alarm-row').first().click();
  await page.getByTestId('ack-button').click();
  await page.getByTestId('ack-comment').fill('on my way');
  await page.getByTestId('ack-confirm').click();
  await page.locator('[data-testid=alarm-state].s-acknowledged').waitFor({ timeout });
  await fitsThePhone();
});

await step('05-chinese', async () => {
  await page.getByTestId('lang-toggle').click();
  await page.goto(`${BASE}/#/`);
  await page.getByTestId('fleet-summary').waitFor({ timeout });
  const summary = await page.getByTestId('fleet-summary').innerText();
  if (!/[\u4e00-\u9fff]/.test(summary)) throw new Error(`the summary is not in Chinese: ${summary}`);
});

if (problems.length) {
  console.log(`FAILED: the page reported errors\n${problems.join('\n')}`);
  process.exit(1);
}
await browser.close();
console.log('ok all');
