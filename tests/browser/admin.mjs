// Managing paging on a phone (360 x 740) in Debian's Chromium: a service manager adds a person,
// a weekly rotation whose turn is now that person's, a grade-1 policy for a site that pages the
// on-call engineer alone, and a stand-in for a day next week. Run by tests/tests/fleet.rs, which then raises a grade-1 alarm and
// checks who was paged.
//
// Environment: BASE, LOGIN, PASSWORD, GATEWAY, NAME, PHONE (the person to add), OTHER (a person
// already there, second in the rotation), ARTIFACTS. Prints one line per step; exits non-zero
// on the first failure.

import { mkdirSync } from 'node:fs';
import { phone, steps } from './phone.mjs';

const { BASE, LOGIN, PASSWORD, GATEWAY, NAME, PHONE, OTHER, ARTIFACTS = '.' } = process.env;
mkdirSync(ARTIFACTS, { recursive: true });
const timeout = 20_000;
const { browser, page, problems } = await phone();

const { step, fitsThePhone } = steps({ browser, page, problems }, 'admin', ARTIFACTS);

await step('01-manager-adds-a-person', async () => {
  await page.goto(`${BASE}/#/admin`);
  await page.getByTestId('signin-login').fill(LOGIN);
  await page.getByTestId('signin-password').fill(PASSWORD);
  await page.getByTestId('signin-submit').click();
  await page.getByTestId('manage-people').click();
  await page.getByTestId('person-name').fill(NAME);
  await page.getByTestId('person-phone').fill(PHONE);
  await page.getByTestId('person-language').selectOption('zh');
  await page.getByTestId('person-save').click();
  await page.locator('[data-testid=person-row]', { hasText: NAME }).waitFor({ timeout });
  await fitsThePhone();
});

await step('02-a-weekly-rotation-whose-turn-is-now-theirs', async () => {
  await page.goto(`${BASE}/#/rotations`);
  await page.getByTestId('rotation-name').fill('Plant A on call');
  await page.getByTestId('rotation-period').selectOption('7');
  // The first handover yesterday at 08:00, so the first member's turn is under way.
  const start = await page.evaluate(() => {
    const d = new Date(Date.now() - 86400e3);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T08:00`;
  });
  await page.getByTestId('rotation-start').fill(start);
  await page.locator(`[data-testid=rotation-member][data-name="${NAME}"]`).check();
  await page.locator(`[data-testid=rotation-member][data-name="${OTHER}"]`).check();
  await page.getByTestId('rotation-save').click();
  const rotation = page.locator('[data-testid=rotation][data-name="Plant A on call"]');
  await rotation.waitFor({ timeout });
  const now = (await rotation.getByTestId('on-call-now').innerText()).trim();
  if (now !== NAME) throw new Error(`on call now: ${now}`);
  const turns = await rotation.locator('[data-testid=turn] b').allInnerTexts();
  if (turns.slice(0, 3).join() !== [NAME, OTHER, NAME].join()) throw new Error(`turns ${turns}`);
  await fitsThePhone();
});

await step('03-the-site-pages-the-on-call-engineer-for-grade-1', async () => {
  await page.goto(`${BASE}/#/gateway/${GATEWAY}`);
  await page.getByTestId('paging-rotation').selectOption({ label: 'Plant A on call' });
  await page.locator('[data-testid=grade-1] summary').click();
  // Grade 1 pages the on-call engineer at once, again every 10 minutes, and nobody else: no
  // chat rooms, and not the default's call two minutes later (a level with nobody goes).
  for (const box of await page.locator('[data-testid=g1-owner], [data-testid=g1-service], [data-testid=g1-manager], [data-testid=g1-chat]').all()) {
    await box.uncheck();
  }
  const onCall = page.getByTestId('g1-on_call');
  if (await page.getByTestId('g1-via').nth(1).inputValue() !== 'voice') throw new Error('the default calls at the second level');
  for (let level = (await onCall.count()) - 1; level > 0; level--) await onCall.nth(level).uncheck();
  await page.getByTestId('g1-repeat').fill('10');
  await page.getByTestId('paging-save').click();
  await page.getByTestId('paging-rotation').waitFor({ timeout });
  await page.waitForFunction(() => document.querySelector('[data-testid=grade-1] summary')?.textContent.includes('own'), null, { timeout });
  await fitsThePhone();
});

await step('04-a-stand-in-next-week', async () => {
  await page.goto(`${BASE}/#/rotations`);
  const rotation = page.locator('[data-testid=rotation][data-name="Plant A on call"]');
  await rotation.locator('summary').click();
  await rotation.getByTestId('standin-person').selectOption({ label: OTHER });
  // Seven to eight days ahead: who is on call now does not change.
  const [from, to] = await page.evaluate(() => [7, 8].map((days) => {
    const d = new Date(Date.now() + days * 86400e3);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T08:00`;
  }));
  await rotation.getByTestId('standin-start').fill(from);
  await rotation.getByTestId('standin-end').fill(to);
  await rotation.getByTestId('standin-save').click();
  await page.locator('[data-testid=rotation][data-name="Plant A on call"] p', { hasText: OTHER }).waitFor({ timeout });
  await fitsThePhone();
});

await step('05-chinese', async () => {
  await page.goto(`${BASE}/#/gateway/${GATEWAY}`);
  await page.getByTestId('paging-rotation').waitFor({ timeout });
  await page.getByTestId('lang-toggle').click();
  await page.locator('h2', { hasText: '呼叫' }).waitFor({ timeout });
  await fitsThePhone();
});

if (problems.length) {
  console.log(`FAILED page problems: ${problems.join('; ')}`);
  process.exit(1);
}
await browser.close();
