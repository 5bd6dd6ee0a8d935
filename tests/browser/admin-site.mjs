// Running sites from a phone (360 x 740) in Debian's Chromium, as an administrator. Run twice by
// tests/tests/fleet.rs:
// - PHASE=provision: provisions a gateway, saves the password and the two files the page offers
//   into OUT, and checks the password is not shown again. The test then installs the files,
//   starts the gateway and gives it devices.
// - PHASE=site: plans maintenance for the site, changes a rule of one unit (RULE, to grade 1),
//   makes a share link of it, adds a customer organisation, invites its owner and gives it the
//   site; then the same screens in Chinese. The test checks each through the API.
//
// Environment: BASE, LOGIN, PASSWORD, GATEWAY, PHASE, OUT, RULE, ARTIFACTS. Prints one line per
// step; exits non-zero on the first failure.

import { mkdirSync, writeFileSync } from 'node:fs';
import { phone, steps } from './phone.mjs';

const { BASE, LOGIN, PASSWORD, GATEWAY, PHASE, OUT, RULE, ARTIFACTS = '.' } = process.env;
mkdirSync(ARTIFACTS, { recursive: true });
const timeout = 20_000;
const { browser, page, problems } = await phone({ acceptDownloads: true });
page.on('dialog', (dialog) => dialog.accept());

const { step, fitsThePhone } = steps({ browser, page, problems }, 'admin-site', ARTIFACTS);
async function signIn(hash) {
  await page.goto(`${BASE}/${hash}`);
  await page.getByTestId('signin-login').fill(LOGIN);
  await page.getByTestId('signin-password').fill(PASSWORD);
  await page.getByTestId('signin-submit').click();
}
/** Clicks a download link and returns the file's text. */
async function download(testId) {
  const [file] = await Promise.all([page.waitForEvent('download', { timeout }), page.getByTestId(testId).click()]);
  const path = await file.path();
  return (await import('node:fs')).readFileSync(path, 'utf8');
}

if (PHASE === 'provision') {
  await step('01-an-administrator-provisions-a-gateway', async () => {
    await signIn('#/gateways');
    await page.getByTestId('provision-id').fill(GATEWAY);
    await page.getByTestId('provision-save').click();
    const password = (await page.getByTestId('provisioned-password').innerText({ timeout })).trim();
    if (!/^[0-9a-f]{48}$/.test(password)) throw new Error(`password ${password}`);
    const config = await download('download-config');
    const secret = await download('download-secret');
    if (secret.trim() !== password) throw new Error('the secret file holds another password');
    if (!config.includes(`gateway_id = "${GATEWAY}"`)) throw new Error(`config:\n${config}`);
    writeFileSync(`${OUT}/gateway.toml`, config);
    writeFileSync(`${OUT}/gateway.secret`, secret);
    await fitsThePhone();
  });

  await step('02-the-password-is-shown-once', async () => {
    await page.reload();
    await page.locator('[data-testid=gateway-row]', { hasText: GATEWAY }).waitFor({ timeout });
    if (await page.getByTestId('provisioned').count()) throw new Error('the password is still on the page');
    // The same id again is refused, and says so.
    await page.getByTestId('provision-id').fill(GATEWAY);
    await page.getByTestId('provision-save').click();
    await page.locator('[data-testid=provision-error]', { hasText: 'exists' }).waitFor({ timeout });
  });
}

if (PHASE === 'site') {
  await step('03-maintenance-for-the-whole-site', async () => {
    await signIn(`#/gateway/${GATEWAY}`);
    await page.getByTestId('site-unit').first().waitFor({ timeout });
    await page.getByTestId('maintenance-reason').fill('Annual tube cleaning');
    await page.getByTestId('maintenance-save').click();
    await page.locator('[data-testid=maintenance-window]', { hasText: 'Annual tube cleaning' }).waitFor({ timeout });
    await fitsThePhone();
  });

  await step('04-a-rule-changed-for-one-unit', async () => {
    await page.getByTestId('site-unit').first().click();
    const rule = page.locator(`[data-testid=rule][data-key="${RULE}"]`);
    await rule.locator('summary').click();
    await rule.getByTestId('rule-grade').selectOption('1');
    await rule.getByTestId('rule-save').click();
    await page.locator(`[data-testid=rule-override][data-key="${RULE}"]`).waitFor({ timeout });
    await fitsThePhone();
  });

  await step('05-a-share-link-of-the-unit', async () => {
    await page.getByTestId('share-label').fill('Process chiller, food plant');
    await page.getByTestId('share-days').fill('30');
    await page.getByTestId('share-save').click();
    const url = await page.getByTestId('share-url').getAttribute('href', { timeout });
    const shared = await page.request.get(url);
    if (shared.status() !== 200 || !(await shared.text()).includes('Process chiller, food plant')) {
      throw new Error(`the share link answers ${shared.status()}`);
    }
    await fitsThePhone();
  });

  await step('06-a-customer-its-owner-invited-and-the-site-theirs', async () => {
    await page.goto(`${BASE}/#/admin`);
    await page.getByTestId('manage-accounts').click();
    await page.getByTestId('org-name').fill('Acme Foods');
    await page.getByTestId('org-kind').selectOption('customer');
    await page.getByTestId('org-save').click();
    await page.locator('[data-testid=organisation]', { hasText: 'Acme Foods' }).waitFor({ timeout });
    await page.getByTestId('user-login').fill('wang@acme.example');
    await page.getByTestId('user-name').fill('Wang Jingli');
    await page.getByTestId('user-org').selectOption({ label: 'Acme Foods' });
    await page.getByTestId('user-role').selectOption('owner');
    await page.getByTestId('user-save').click();
    const link = await page.getByTestId('invitation-url').innerText({ timeout });
    if (!link.includes('/invite/')) throw new Error(`invitation ${link}`);
    await fitsThePhone();
    await page.goto(`${BASE}/#/gateway/${GATEWAY}`);
    await page.getByTestId('site-owner').selectOption({ label: 'Acme Foods' });
    const [saved] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith(`/gateways/${GATEWAY}/organisation`), { timeout }),
      page.getByTestId('owner-save').click(),
    ]);
    if (saved.status() !== 204) throw new Error(`giving the site answered ${saved.status()}`);
    // Drawn afresh, the page shows Acme Foods as the owner.
    await page.reload();
    await page.waitForFunction(() => document.querySelector('[data-testid=site-owner]')?.selectedOptions[0]?.textContent === 'Acme Foods',
      null, { timeout });
  });

  await step('07-an-api-token-and-the-audit-log', async () => {
    await page.goto(`${BASE}/#/admin`);
    await page.getByTestId('token-name').fill('BMS integration');
    await page.getByTestId('token-save').click();
    const token = (await page.getByTestId('token-secret').innerText({ timeout })).trim();
    const me = await page.request.get(`${BASE}/api/v1/session`, { headers: { Authorization: `Bearer ${token}` } });
    if (me.status() !== 200 || (await me.json()).user.login !== LOGIN) throw new Error(`the token answers ${me.status()}`);
    await page.goto(`${BASE}/#/accounts`);
    await page.locator('[data-testid=audit-entry]', { hasText: 'sign-in' }).first().waitFor({ timeout });
    await fitsThePhone();
  });

  await step('08-chinese', async () => {
    await page.goto(`${BASE}/#/accounts`);
    await page.getByTestId('lang-toggle').click();
    await page.locator('h1', { hasText: '组织与用户' }).waitFor({ timeout });
    await fitsThePhone();
  });
}

if (problems.length) {
  console.log(`FAILED page problems: ${problems.join('; ')}`);
  process.exit(1);
}
await browser.close();
