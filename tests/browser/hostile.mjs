// Loads pages in headless Chromium and reports, as JSON on stdout, everything
// a hostile page could do on its own: requests that leave the page's origin
// (recorded, then aborted), dialogs (alert/confirm/prompt), and every script
// the main world parsed: inline, eval'd, javascript: URLs, or files.
// tests/checkers.rs runs it on finalized pages (served with the CSP, and
// from file:// without it) and on the raw pages, which must be caught.
// Usage: node hostile.mjs <url>...
import { chromium } from 'playwright-core';

const urls = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

function originOf(url) {
  return url.startsWith('file:') ? 'file:' : new URL(url).origin;
}

const results = [];
for (const url of urls) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const origin = originOf(url);
  const r = { url, status: null, external: [], dialogs: [], scripts: [], errors: [] };
  page.on('dialog', (d) => { r.dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => r.errors.push(String(e)));
  page.on('popup', (p) => r.external.push(`popup ${p.url()}`));
  await page.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith('data:') || originOf(u) === origin) return route.continue();
    r.external.push(u);
    return route.abort();
  });
  // Scripts of the page's own (default) worlds only: what Playwright itself runs lives in
  // a utility world, and nothing below evaluates in the main world until the list is read.
  const cdp = await context.newCDPSession(page);
  const mainWorlds = new Set();
  cdp.on('Runtime.executionContextCreated', (e) => {
    if (e.context.auxData && e.context.auxData.isDefault) mainWorlds.add(e.context.id);
  });
  const parsed = [];
  cdp.on('Debugger.scriptParsed', (e) => parsed.push(e));
  await cdp.send('Runtime.enable');
  await cdp.send('Debugger.enable');
  try {
    const response = await page.goto(url, { waitUntil: 'load', timeout: 15000 });
    r.status = response ? response.status() : null;
    // Timers, animations (SMIL), meta refresh and lazy loads get their chance.
    await page.mouse.move(200, 200);
    await page.waitForTimeout(1200);
  } catch (e) {
    r.errors.push(`navigation: ${e}`);
  }
  for (const s of parsed) {
    if (mainWorlds.has(s.executionContextId)) {
      r.scripts.push(s.url || `(inline or eval, ${s.length} chars)`);
    }
  }
  r.finalUrl = page.url();
  await context.close();
  results.push(r);
}
await browser.close();
console.log(JSON.stringify(results));
