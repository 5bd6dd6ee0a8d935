// A gateway's configuration held by the server, on a phone (360 x 740) in Debian's Chromium: a
// service engineer finds the gateway in the fleet list, sees what it runs against what it
// should, sends a change with a mistake (refused, naming the field), corrects it and sends it,
// and watches the gateway take it. Run by tests/tests/fleet.rs with a gateway running.
//
// Environment: BASE, LOGIN, PASSWORD, GATEWAY, ARTIFACTS. Prints one line per step; exits
// non-zero on the first failure.

import { mkdirSync } from 'node:fs';
import { phone, steps } from './phone.mjs';

const { BASE, LOGIN, PASSWORD, GATEWAY, ARTIFACTS = '.' } = process.env;
mkdirSync(ARTIFACTS, { recursive: true });
const timeout = 20_000;
const { browser, page, problems } = await phone();

const { step, fitsThePhone } = steps({ browser, page, problems }, 'gateway-config', ARTIFACTS);
const text = async (id) => (await page.getByTestId(id).innerText()).trim();

await step('01-fleet-list', async () => {
  await page.goto(`${BASE}/#/gateways`);
  await page.getByTestId('signin-login').fill(LOGIN);
  await page.getByTestId('signin-password').fill(PASSWORD);
  await page.getByTestId('signin-submit').click();
  const row = page.locator('[data-testid=gateway-row]', { hasText: GATEWAY });
  await row.waitFor({ timeout });
  if (!(await row.innerText()).includes('In sync')) throw new Error(`row: ${await row.innerText()}`);
  await fitsThePhone();
});

await step('02-gateway-in-sync', async () => {
  await page.locator('[data-testid=gateway-row]', { hasText: GATEWAY }).click();
  await page.getByTestId('config-state').waitFor({ timeout });
  if (await text('config-state') !== 'In sync') throw new Error(`state ${await text('config-state')}`);
  if (await text('config-desired') !== await text('config-running').then((r) => r.replace(/ \(.*\)$/, ''))) {
    throw new Error(`desired ${await text('config-desired')}, running ${await text('config-running')}`);
  }
  if (await page.getByTestId('config-drift').count()) throw new Error('drift shown while in sync');
  await fitsThePhone();
});

let desired = '';
await step('03-a-mistake-is-refused-naming-the-field', async () => {
  desired = await text('config-desired');
  const editor = page.getByTestId('config-text');
  const original = await editor.inputValue();
  await editor.fill(original.replace('trane-ch530', 'trane-ch99'));
  await page.getByTestId('config-save').click();
  await page.getByTestId('config-error').waitFor({ state: 'visible', timeout });
  const error = await text('config-error');
  if (!error.includes('devices[0].profile')) throw new Error(`error: ${error}`);
  await editor.fill(original.replace('retries = 0', 'retries = 1'));
  await fitsThePhone();
});

await step('04-the-change-is-sent-and-taken', async () => {
  await page.getByTestId('config-note').fill('one retry on chiller 1');
  await page.getByTestId('config-save').click();
  await page.locator('[data-testid=config-desired]', { hasNotText: desired }).waitFor({ timeout });
  // The status refreshes itself: on trial, then in sync once the trial ends.
  await page.locator('[data-testid=config-state]', { hasText: 'In sync' }).waitFor({ timeout: 60_000 });
  const versions = await page.locator('[data-testid=config-version]').count();
  if (versions < 4) throw new Error(`${versions} versions listed`);
  await fitsThePhone();
});

await step('05-chinese', async () => {
  await page.getByTestId('lang-toggle').click();
  await page.locator('[data-testid=config-state]', { hasText: '已同步' }).waitFor({ timeout });
  await fitsThePhone();
});

if (problems.length) {
  console.log(`FAILED page problems: ${problems.join('; ')}`);
  process.exit(1);
}
await browser.close();
