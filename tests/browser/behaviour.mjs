// Drives every exported site in real headless Chromium and reports, as JSON
// on stdout, what the Rust test (tests/checkers.rs) asserts on: console
// errors, requests leaving the site, horizontal overflow on a phone and a
// tablet, axe-core's accessibility violations, and whether the nav toggle,
// the form validation, the cart and the filters work. Screenshots at 375,
// 768 and 1440 px go to <screenshot-dir>.
// Usage: node behaviour.mjs <preview-dir> <screenshot-dir>
import { chromium } from 'playwright-core';
import { readdirSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
// WCAG 2.1 A and AA, plus axe's best practices.
const axeTags = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'];

async function axe(page) {
  await page.addScriptTag({ path: axePath });
  return page.evaluate(async (tags) => {
    // No preload: it fetches the stylesheets with XHR, which file: pages may not do.
    const res = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, preload: false });
    return res.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      targets: v.nodes.slice(0, 5).map((n) => n.target.join(' ')),
    }));
  }, axeTags);
}

const [root, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function open(id, width) {
  const page = await browser.newPage({ viewport: { width, height: 900 } });
  const errors = [];
  const external = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('file:') || url.startsWith('data:')) return route.continue();
    external.push(url);
    return route.abort();
  });
  await page.goto('file://' + join(root, id, 'index.html'));
  await page.waitForLoadState('load');
  return { page, errors, external };
}

async function fill(form) {
  for (const el of await form.$$('input[required], textarea[required], select[required]')) {
    const [tag, type] = await el.evaluate((e) => [e.tagName.toLowerCase(), (e.getAttribute('type') || '').toLowerCase()]);
    if (tag === 'select') {
      const values = await el.evaluate((e) => Array.from(e.options).map((o) => o.value).filter(Boolean));
      if (values.length) await el.selectOption(values[0]);
    } else if (type === 'checkbox' || type === 'radio') {
      await el.check({ force: true });
    } else if (type === 'email') {
      await el.fill('test@example.com');
    } else if (type === 'date') {
      const d = new Date(Date.now() + 7 * 864e5);
      await el.fill(d.toISOString().slice(0, 10));
    } else if (type === 'time') {
      await el.fill('10:30');
    } else if (type === 'number') {
      await el.fill('1');
    } else if (type === 'tel') {
      await el.fill('+44 20 7946 0000');
    } else {
      await el.fill('Test');
    }
  }
}

const results = [];
for (const id of readdirSync(root).sort()) {
  const r = { id, errors: [], external: [], overflow375: null, overflow768: null, axe375: [], axe1440: [], nav: null, form: null, cart: null, filter: null };
  // Phone: overflow and the navigation toggle.
  {
    const { page, errors, external } = await open(id, 375);
    r.overflow375 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await page.screenshot({ path: join(shots, `${id}-375.png`), fullPage: true });
    r.axe375 = await axe(page);
    const toggle = await page.$('.nav-toggle');
    if (toggle && await toggle.isVisible()) {
      await toggle.click();
      r.nav = (await toggle.getAttribute('aria-expanded')) === 'true';
    }
    r.errors.push(...errors); r.external.push(...external);
    await page.close();
  }
  // Tablet.
  {
    const { page, errors, external } = await open(id, 768);
    r.overflow768 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await page.screenshot({ path: join(shots, `${id}-768.png`), fullPage: true });
    r.errors.push(...errors); r.external.push(...external);
    await page.close();
  }
  // Desktop: accessibility, forms, cart, filters.
  {
    const { page, errors, external } = await open(id, 1440);
    await page.screenshot({ path: join(shots, `${id}-1440.png`), fullPage: true });
    r.axe1440 = await axe(page);
    const form = await page.$('form[data-pf-form]');
    if (form) {
      await form.evaluate((f) => f.requestSubmit());
      const invalid = await form.$$eval('[aria-invalid="true"]', (els) => els.length);
      await fill(form);
      await form.evaluate((f) => f.requestSubmit());
      const status = (await form.$eval('.form-status', (s) => s.textContent)).trim();
      const stillInvalid = await form.$$eval('[aria-invalid="true"]', (els) => els.length);
      r.form = { invalidWhenEmpty: invalid, invalidWhenFilled: stillInvalid, status };
    }
    const qty = await page.$('input[data-price]');
    if (qty) {
      const before = (await page.$eval('[data-cart-total]', (e) => e.textContent)).trim();
      await qty.fill('2');
      await qty.dispatchEvent('input');
      const after = (await page.$eval('[data-cart-total]', (e) => e.textContent)).trim();
      r.cart = { before, after };
    }
    const buttons = await page.$$('.filter-btn');
    if (buttons.length > 2) {
      const total = await page.$$eval('[data-filter-target]', (bars) => bars.length);
      await buttons[1].click();
      const hidden = await page.$$eval('[data-category]', (els) => els.filter((e) => e.hidden || e.offsetParent === null).length);
      const pressed = await buttons[1].getAttribute('aria-pressed');
      r.filter = { bars: total, hidden, pressed };
    }
    r.errors.push(...errors); r.external.push(...external);
    await page.close();
  }
  results.push(r);
}
await browser.close();
console.log(JSON.stringify(results, null, 2));
