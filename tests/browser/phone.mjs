// Debian's Chromium as a phone (360 x 740, touch, 2x pixels), shared by the browser tests and
// benchmark P8. `problems` collects the page's own errors (a refused request also shows as a
// console error of the browser's own, "Failed to load resource", which is not the page's fault).

import { chromium } from 'playwright-core';

export async function phone(contextOptions = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const context = await browser.newContext({
    viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, ...contextOptions,
  });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => message.type() === 'error' && !message.text().startsWith('Failed to load resource')
    && problems.push(`console: ${message.text()}`));
  return { browser, context, page, problems };
}

/**
 * A script's steps: `step(name, body)` runs one, screenshots it into `artifacts` as
 * `<prefix>-<name>.png`, prints `ok <name>`, and on a failure prints why with the page's
 * problems and exits non-zero; `fitsThePhone()` fails when the page is wider than the screen.
 */
export function steps({ browser, page, problems }, prefix, artifacts) {
  async function step(name, body) {
    try {
      await body();
      await page.screenshot({ path: `${artifacts}/${prefix}-${name}.png`, fullPage: true });
      console.log(`ok ${name}`);
    } catch (error) {
      await page.screenshot({ path: `${artifacts}/${prefix}-${name}-failed.png`, fullPage: true }).catch(() => {});
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
  return { step, fitsThePhone };
}
