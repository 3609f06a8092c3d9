// Opens one served prototype in headless Chromium and reports, as JSON,
// its title and every console message (CSP violations show up there).
// Usage: node served.mjs <url> <screenshot.png>
import { chromium } from 'playwright-core';

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const console_ = [];
page.on('console', (m) => console_.push({ type: m.type(), text: m.text() }));
page.on('pageerror', (e) => console_.push({ type: 'pageerror', text: String(e) }));
const response = await page.goto(url, { waitUntil: 'load' });
const title = await page.title();
const banner = await page.$eval('.pf-banner', (e) => e.textContent.trim()).catch(() => null);
const styled = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
await page.screenshot({ path: shot, fullPage: false });
// The banner's close button works without script: a method=dialog form, which CSP's
// form-action 'none' must not block.
let dismissed = null;
try {
  await page.click('.pf-banner-close');
  dismissed = await page.$eval('.pf-banner', (e) => !e.open && getComputedStyle(e).display === 'none');
} catch (e) {
  dismissed = String(e);
}
await browser.close();
console.log(JSON.stringify({ status: response.status(), csp: response.headers()['content-security-policy'] || null, title, banner, styled, dismissed, console: console_ }));
