// Remote control from a phone (360 x 740) in Debian's Chromium: an owner changes a unit's
// chilled-water setpoint in two steps (the value, then a review of now → new to confirm) and
// sees the chiller's answer. A value out of bounds is refused before the review.
// Run by tests/tests/command_dashboard.rs, which starts the server, a real gateway and the
// simulated chiller, and checks afterwards what reached the chiller.
//
// Environment: BASE (the server's URL), LOGIN, PASSWORD, UNIT_ID, NEW_VALUE (in °C, within the
// bounds and different from the current 7.0), ARTIFACTS (a directory for the screenshots).
// Prints one line per step and a JSON line of what it saw; exits non-zero on the first failure.

import { mkdirSync } from 'node:fs';
import { phone } from './phone.mjs';

const { BASE, LOGIN, PASSWORD, UNIT_ID, NEW_VALUE = '8.5', ARTIFACTS = '.' } = process.env;
mkdirSync(ARTIFACTS, { recursive: true });
const timeout = 20_000;
const POINT = 'chw_setpoint';

// The refused command's 409 is the browser's console error, not the page's: phone() skips it.
const { browser, page, problems } = await phone();
const seen = {};

async function step(name, body) {
  try {
    await body();
    // What the phone's screen shows (the review is a modal dialog over the page).
    await page.screenshot({ path: `${ARTIFACTS}/command-${name}.png` });
    console.log(`ok ${name}`);
  } catch (error) {
    await page.screenshot({ path: `${ARTIFACTS}/command-${name}-failed.png` }).catch(() => {});
    console.log(`FAILED ${name}: ${error.message}`);
    for (const problem of problems) console.log(problem);
    console.log(JSON.stringify(seen));
    await browser.close();
    process.exit(1);
  }
}

async function fitsThePhone() {
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  if (width > 360) throw new Error(`the page is ${width} px wide on a 360 px screen`);
}
const text = async (testId) => (await page.getByTestId(testId).innerText()).trim();
/** The first number in `s`. */
const number = (s) => Number((s.match(/-?\d+(?:\.\d+)?/) || [])[0]);

await step('01-signin', async () => {
  await page.goto(`${BASE}/`);
  await page.getByTestId('signin-login').fill(LOGIN);
  await page.getByTestId('signin-password').fill(PASSWORD);
  await page.getByTestId('signin-submit').click();
  await page.getByTestId('unit-card').first().waitFor({ timeout });
});

await step('02-unit-control', async () => {
  await page.goto(`${BASE}/#/unit/${UNIT_ID}`);
  await page.getByTestId('control').waitFor({ timeout });
  const open = page.locator(`[data-testid=command-open][data-point-name=${POINT}]`);
  await open.waitFor({ timeout });
  seen.points = await page.locator('[data-testid=command-point-value]').evaluateAll(
    (els) => els.map((e) => [e.dataset.pointName, e.textContent.trim()]));
  await open.scrollIntoViewIfNeeded();
  await fitsThePhone();
});

await step('03-out-of-bounds-refused', async () => {
  await page.locator(`[data-testid=command-open][data-point-name=${POINT}]`).click();
  const input = page.getByTestId('command-value');
  await input.waitFor({ timeout });
  for (const [name, want] of [['type', 'number'], ['inputmode', 'decimal'], ['min', '4.4'], ['max', '15.6'], ['step', '0.1']]) {
    const got = await input.getAttribute(name);
    if (got !== want) throw new Error(`the value input has ${name}=${got}, not ${want}`);
  }
  seen.range = await text('command-range');
  await input.fill('2');
  await page.getByTestId('command-next').click();
  const error = page.getByTestId('command-error');
  await page.waitForFunction(() => document.querySelector('[data-testid=command-error]')?.textContent.trim(), null, { timeout });
  seen.out_of_bounds = (await error.innerText()).trim();
  if (!seen.out_of_bounds.includes('4.4') || !seen.out_of_bounds.includes('15.6')) {
    throw new Error(`the refusal does not show the allowed range: ${seen.out_of_bounds}`);
  }
  if (await page.getByTestId('command-review').count()) throw new Error('a value out of bounds went to the review');
  if (await page.getByTestId('command-result').isVisible()) throw new Error('a value out of bounds shows a result: was it sent?');
  await fitsThePhone();
});

await step('04-review', async () => {
  await page.getByTestId('command-value').fill(NEW_VALUE);
  await page.getByTestId('command-next').click();
  const review = page.getByTestId('command-review');
  await review.waitFor({ state: 'visible', timeout });
  seen.review_title = (await review.locator('h2').innerText()).trim();
  seen.current = await text('command-current');
  seen.new = await text('command-new');
  if (number(seen.current) !== 7 || !seen.current.includes('°C')) throw new Error(`the review shows the current value ${seen.current}, not 7.0 °C`);
  if (number(seen.new) !== Number(NEW_VALUE) || !seen.new.includes('°C')) throw new Error(`the review shows the new value ${seen.new}, not ${NEW_VALUE} °C`);
  const box = await review.boundingBox();
  if (!box || box.x < 0 || box.x + box.width > 360) throw new Error(`the review does not fit the screen: ${JSON.stringify(box)}`);
  for (const id of ['command-confirm', 'command-cancel']) if (!(await page.getByTestId(id).isVisible())) throw new Error(`no ${id} button`);
  const focused = await page.evaluate(() => document.activeElement?.dataset.testid);
  if (focused === 'command-confirm') throw new Error('the confirm button has the focus: Enter would send');
  await fitsThePhone();
});

await step('05-confirmed-done', async () => {
  await page.getByTestId('command-confirm').click();
  await page.getByTestId('command-review').waitFor({ state: 'detached', timeout });
  await page.locator('[data-testid=command-result][data-status=done]').waitFor({ timeout: 30_000 });
  seen.result = await text('command-result');
  if (number(seen.result) !== Number(NEW_VALUE)) throw new Error(`the result does not say it reads ${NEW_VALUE}: ${seen.result}`);
  const row = page.locator('[data-testid=command-row]').first();
  await page.locator('[data-testid=command-row][data-status=done]').first().waitFor({ timeout });
  seen.recent = await page.locator('[data-testid=command-row]').evaluateAll(
    (els) => els.map((e) => ({ status: e.dataset.status, text: e.textContent.replace(/\s+/g, ' ').trim() })));
  if (seen.recent[0].status !== 'done') throw new Error(`the newest command row is ${seen.recent[0].status}`);
  if (!(await row.innerText()).includes(NEW_VALUE)) throw new Error(`the newest command row lacks ${NEW_VALUE}`);
  // The new reading arrives live from the gateway's next poll.
  await page.waitForFunction(
    ([point, want]) => Number(document.querySelector(`[data-testid=command-point-value][data-point-name=${point}]`)?.textContent.match(/-?\d+(\.\d+)?/)?.[0]) === want,
    [POINT, Number(NEW_VALUE)], { timeout });
  await page.getByTestId('command-result').scrollIntoViewIfNeeded();
  await fitsThePhone();
});

await step('06-chinese', async () => {
  await page.getByTestId('lang-toggle').click();
  await page.waitForFunction(() => [document.querySelector('#ctl-h'), document.querySelector('[data-testid=command-row] .astate')]
    .every((e) => e && /[\u4e00-\u9fff]/.test(e.textContent)), null, { timeout });
  const heading = (await page.locator('#ctl-h').innerText()).trim();
  const status = (await page.locator('[data-testid=command-row] .astate').first().innerText()).trim();
  seen.chinese = [heading, status];
  if (!/[\u4e00-\u9fff]/.test(heading + status)) throw new Error(`the control is not in Chinese: ${heading} / ${status}`);
  await fitsThePhone();
});

if (problems.length) {
  console.log(`FAILED: the page reported errors\n${problems.join('\n')}`);
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(seen));
console.log('ok all');
