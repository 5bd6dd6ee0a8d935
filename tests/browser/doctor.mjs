// The remote doctor on a phone (360 x 740) in Debian's Chromium: a service engineer reviews a
// drafted report (drops a finding, rewords the advice of another, adds a note) and signs it; the
// owner, a Chinese speaker, follows the link the server sent and reads the signed report.
// Run by tests/tests/doctor.rs, which drafts the report from a simulated month beforehand and
// checks afterwards what was stored and sent.
//
// Environment: BASE, ENGINEER_LOGIN, ENGINEER_PASSWORD, OWNER_LOGIN, OWNER_PASSWORD, REPORT_ID,
// DROP (a finding's key to leave out), KEEP (a finding's key to keep and reword), NOTE, ADVICE,
// LINK (filled in by the test once the report is signed: read from a file, OWNER_LINK_FILE),
// ARTIFACTS. Prints one line per step; exits non-zero on the first failure.

import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { phone } from './phone.mjs';

const { BASE, ENGINEER_LOGIN, ENGINEER_PASSWORD, OWNER_LOGIN, OWNER_PASSWORD, REPORT_ID, DROP, KEEP, NOTE, ADVICE,
  OWNER_LINK_FILE, ARTIFACTS = '.' } = process.env;
mkdirSync(ARTIFACTS, { recursive: true });
const timeout = 20_000;

let current = await phone();
async function step(name, body) {
  try {
    await body();
    await current.page.screenshot({ path: `${ARTIFACTS}/doctor-${name}.png`, fullPage: true });
    console.log(`ok ${name}`);
  } catch (error) {
    await current.page.screenshot({ path: `${ARTIFACTS}/doctor-${name}-failed.png`, fullPage: true }).catch(() => {});
    console.log(`FAILED ${name}: ${error.message}`);
    for (const problem of current.problems) console.log(problem);
    await current.browser.close();
    process.exit(1);
  }
}
async function fitsThePhone() {
  const width = await current.page.evaluate(() => document.documentElement.scrollWidth);
  if (width > 360) throw new Error(`the page is ${width} px wide on a 360 px screen`);
}
async function signIn(login, password) {
  const { page } = current;
  await page.getByTestId('signin-login').fill(login);
  await page.getByTestId('signin-password').fill(password);
  await page.getByTestId('signin-submit').click();
}

await step('01-engineer-opens-the-draft', async () => {
  const { page } = current;
  await page.goto(`${BASE}/#/report/${REPORT_ID}`);
  await signIn(ENGINEER_LOGIN, ENGINEER_PASSWORD);
  await page.getByTestId('report-status').waitFor({ timeout });
  const status = (await page.getByTestId('report-status').innerText()).trim();
  if (status !== 'Draft') throw new Error(`status ${status}`);
  const keys = await page.locator('[data-testid=finding]').evaluateAll((els) => els.map((e) => e.dataset.key));
  if (!keys.includes(DROP) || !keys.includes(KEEP)) throw new Error(`findings ${keys}`);
  if (await page.locator('[data-testid=finding] svg.evidence').count() !== keys.length) throw new Error('a chart per finding');
  await fitsThePhone();
});

await step('02-engineer-edits-and-signs', async () => {
  const { page } = current;
  await page.locator(`[data-testid=finding][data-key=${DROP}] [data-testid=finding-drop]`).check();
  await page.locator(`[data-testid=finding][data-key=${KEEP}] [data-testid=finding-advice]`).fill(ADVICE);
  await page.getByTestId('report-note-input').fill(NOTE);
  await page.getByTestId('report-sign').click();
  await page.locator('[data-testid=report-status]', { hasText: 'Signed' }).waitFor({ timeout });
  const keys = await page.locator('[data-testid=finding]').evaluateAll((els) => els.map((e) => e.dataset.key));
  if (keys.join() !== KEEP) throw new Error(`after signing the report holds ${keys}`);
  await fitsThePhone();
});

await step('03-owner-follows-the-link', async () => {
  await current.browser.close();
  current = await phone();
  const { page } = current;
  // The test writes the link the server enqueued for the owner once the report is signed.
  const deadline = Date.now() + timeout;
  while (!existsSync(OWNER_LINK_FILE) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const link = readFileSync(OWNER_LINK_FILE, 'utf8').trim();
  await page.goto(link);
  await signIn(OWNER_LOGIN, OWNER_PASSWORD);
  await page.getByTestId('report-headline').waitFor({ timeout });
  const status = (await page.getByTestId('report-status').innerText()).trim();
  if (status !== '已签发') throw new Error(`the owner sees status ${status}`);
  const headline = await page.getByTestId('report-headline').innerText();
  if (!headline.includes('运行') || !headline.includes('1 项')) throw new Error(`headline ${headline}`);
  const note = await page.getByTestId('report-note').innerText();
  if (!note.includes(NOTE)) throw new Error(`note ${note}`);
  const keys = await page.locator('[data-testid=finding]').evaluateAll((els) => els.map((e) => e.dataset.key));
  if (keys.join() !== KEEP) throw new Error(`the owner sees ${keys}`);
  if (await page.getByTestId('report-sign').count() !== 0) throw new Error('an owner cannot sign');
  await fitsThePhone();
});

await current.browser.close();
console.log('ok all');
