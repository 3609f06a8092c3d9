// Drives the example contact form in headless Chromium against a running
// webhook, and reports what happened as JSON.
// Usage: node form.mjs <webhook base url> <file to attach> <screenshot.png>
import { chromium } from 'playwright-core';

const [base, file, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const console_ = [];
const watch = (page, label) => {
  page.on('console', (m) => console_.push({ page: label, type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => console_.push({ page: label, type: 'pageerror', text: String(e) }));
};
const fill = async (page, company) => {
  await page.fill('#name', 'Rosa Test');
  await page.fill('#email', 'rosa@example.com');
  await page.fill('#company', company);
  await page.fill('#description', 'A small bakery with sourdough, rye and cakes; open Tue-Sun 7am-3pm.');
  await page.check('input[name=pages][value=about]');
  await page.setInputFiles('#files', file);
};

// 1. Without JavaScript: a plain form post, answered with a 303.
const plain = await browser.newContext({ javaScriptEnabled: false });
const p1 = await plain.newPage();
watch(p1, 'plain');
await p1.goto(base + '/');
await fill(p1, 'Plain Form Bakery');
const [response] = await Promise.all([
  p1.waitForNavigation(),
  p1.click('button[type=submit]'),
]);
const thanks = p1.url();
const redirected = response.request().redirectedFrom() !== null;

// 2. The thank-you page, with JavaScript, follows the events to completed.
const ctx = await browser.newContext();
const p2 = await ctx.newPage();
watch(p2, 'thanks');
await p2.goto(thanks);
await p2.waitForSelector('body[data-status="completed"]', { timeout: 120000 });
const link = await p2.$eval('#url', (a) => a.href);

// 3. With JavaScript, the form shows the progress and the link itself.
const p3 = await ctx.newPage();
watch(p3, 'fetch');
await p3.goto(base + '/');
await fill(p3, 'Fetch Form Bakery');
await p3.click('button[type=submit]');
await p3.waitForSelector('body[data-status="completed"]', { timeout: 120000 });
const link3 = await p3.$eval('#url', (a) => a.href);
await p3.screenshot({ path: shot, fullPage: true });
// The prototype itself opens.
const site = await ctx.newPage();
watch(site, 'site');
const siteResponse = await site.goto(link3);
const siteTitle = await site.title();

await browser.close();
console.log(JSON.stringify({ thanks, redirected, link, link3, siteStatus: siteResponse.status(), siteTitle, console: console_ }));
