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
