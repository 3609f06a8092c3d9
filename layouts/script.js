/*
 * protoforge prototype behaviour — one static script for every layout.
 *
 * Every feature looks for its own elements and does nothing when they are
 * absent. No network, no eval, no innerHTML with page text: everything the
 * script shows comes from the DOM (text nodes and data- attributes the
 * templates filled, already HTML-escaped) and is written back with
 * textContent.
 */
(function () {
  'use strict';

  var doc = document;
  var root = doc.documentElement;
  var body = doc.body;
  var lang = root.getAttribute('lang') || undefined;
  root.classList.add('js');

  function $all(selector, scope) {
    return Array.prototype.slice.call((scope || doc).querySelectorAll(selector));
  }
  function msg(name, fallback) {
    return (body && body.getAttribute('data-' + name)) || fallback;
  }
  function numberFormat(options) {
    try {
      return new Intl.NumberFormat(lang, options);
    } catch (e) {
      return new Intl.NumberFormat(undefined, options);
    }
  }

  /* ───────── prices ─────────
   * Prices are the customer's own text ("£3.50", "12,90 €", "٤٥ ر.س", "from $9").
   * parsePrice finds the first number in it and remembers where it was, so a
   * computed amount can be written back in the same shape (same currency sign,
   * same side) but formatted with Intl.NumberFormat in the page's language.
   */
  function toAsciiDigits(text) {
    return String(text)
      .replace(/[\u0660-\u0669]/g, function (d) { return String(d.charCodeAt(0) - 0x0660); })
      .replace(/[\u06F0-\u06F9]/g, function (d) { return String(d.charCodeAt(0) - 0x06F0); })
      .replace(/[\uFF10-\uFF19]/g, function (d) { return String(d.charCodeAt(0) - 0xFF10); })
      .replace(/\u066B/g, '.')
      .replace(/\u066C/g, ',');
  }
  function parsePrice(raw) {
    var text = toAsciiDigits(raw || '');
    var match = /\d[\d.,'\u00A0\u202F ]*/.exec(text);
    if (!match) { return null; }
    var token = match[0].replace(/[.,'\u00A0\u202F ]+$/, '');
    var digits = token.replace(/['\u00A0\u202F ]/g, '');
    var lastSep = Math.max(digits.lastIndexOf('.'), digits.lastIndexOf(','));
    var decimals = 0;
    var normalized = digits;
    if (lastSep >= 0) {
      var tail = digits.length - lastSep - 1;
      if (tail > 0 && tail <= 2) {
        decimals = tail;
        normalized = digits.slice(0, lastSep).replace(/[.,]/g, '') + '.' + digits.slice(lastSep + 1);
      } else {
        normalized = digits.replace(/[.,]/g, ''); /* only thousands separators */
      }
    }
    var value = parseFloat(normalized);
    if (!isFinite(value)) { return null; }
    return {
      value: value,
      decimals: decimals,
      /* the customer wrote Arabic-Indic digits: answer in the same digits */
      arabic: /[\u0660-\u0669\u06F0-\u06F9]/.test(String(raw)),
      before: text.slice(0, match.index),
      after: text.slice(match.index + token.length)
    };
  }
  function formatLike(template, amount, decimals) {
    var options = { minimumFractionDigits: decimals, maximumFractionDigits: decimals };
    if (template && template.arabic) { options.numberingSystem = 'arab'; }
    var fmt = numberFormat(options);
    var number = fmt.format(amount);
    if (!template) { return number; }
    return (template.before + number + template.after).trim();
  }

  /* ───────── mobile navigation ───────── */
  function initNav() {
    var toggle = doc.querySelector('.nav-toggle');
    if (!toggle) { return; }
    var list = doc.getElementById(toggle.getAttribute('aria-controls'));
    if (!list) { return; }
    toggle.hidden = false;
    function setOpen(open) {
      toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
      list.classList.toggle('is-open', open);
    }
    toggle.addEventListener('click', function () {
      setOpen(toggle.getAttribute('aria-expanded') !== 'true');
    });
    list.addEventListener('click', function (event) {
      if (event.target.closest('a')) { setOpen(false); }
    });
    doc.addEventListener('keydown', function (event) {
      if (event.key === 'Escape' && toggle.getAttribute('aria-expanded') === 'true') {
        setOpen(false);
        toggle.focus();
      }
    });
    doc.addEventListener('click', function (event) {
      if (toggle.getAttribute('aria-expanded') === 'true' &&
          !list.contains(event.target) && !toggle.contains(event.target)) {
        setOpen(false);
      }
    });
  }

  /* ───────── filters (menu, products, gallery, events) ─────────
   * <div class="filter-bar" data-filter-target="ID"> gets one button per
   * distinct data-category among the target's children, plus "All".
   */
  function initFilters() {
    $all('[data-filter-target]').forEach(function (bar) {
      var target = doc.getElementById(bar.getAttribute('data-filter-target'));
      if (!target) { return; }
      var units = Array.prototype.filter.call(target.children, function (el) {
        return el.hasAttribute('data-category');
      });
      var categories = [];
      units.forEach(function (el) {
        var cat = el.getAttribute('data-category');
        if (cat && categories.indexOf(cat) === -1) { categories.push(cat); }
      });
      if (categories.length < 2) { return; }
      var buttons = [];
      function apply(active, pressed) {
        buttons.forEach(function (b) { b.setAttribute('aria-pressed', b === pressed ? 'true' : 'false'); });
        units.forEach(function (el) {
          el.hidden = active !== null && el.getAttribute('data-category') !== active;
        });
      }
      function addButton(label, category) {
        var button = doc.createElement('button');
        button.type = 'button';
        button.className = 'filter-btn';
        button.textContent = label;
        if (category !== null) { button.setAttribute('data-category', category); }
        button.addEventListener('click', function () { apply(category, button); });
        buttons.push(button);
        bar.appendChild(button);
      }
      addButton(msg('label-all', 'All'), null);
      categories.forEach(function (cat) { addButton(cat, cat); });
      buttons[0].setAttribute('aria-pressed', 'true');
      for (var i = 1; i < buttons.length; i++) { buttons[i].setAttribute('aria-pressed', 'false'); }
      bar.hidden = false;
    });
    /* links elsewhere on the page that jump to a category */
    $all('[data-filter-jump]').forEach(function (link) {
      link.addEventListener('click', function () {
        var wanted = link.getAttribute('data-filter-jump');
        var match = $all('.filter-btn[data-category]').filter(function (b) {
          return b.getAttribute('data-category') === wanted;
        })[0];
        if (match) { match.click(); }
      });
    });
  }

  /* ───────── quantities, cart total ───────── */
  function clampQty(input) {
    var n = Math.round(Number(input.value));
    if (!isFinite(n) || n < 0) { n = 0; }
    if (n > 99) { n = 99; }
    return n;
  }
  function initCart() {
    var inputs = $all('input[data-price]');
    if (!inputs.length) { return; }
    var priced = inputs.map(function (input) {
      return { input: input, price: parsePrice(input.getAttribute('data-price')) };
    }).filter(function (p) { return p.price !== null; });
    if (!priced.length) { return; }
    var template = priced[0].price;
    var decimals = priced.some(function (p) { return p.price.decimals > 0; }) ? 2 : 0;
    var countFormat = numberFormat(template.arabic ? { numberingSystem: 'arab' } : {});
    var totals = $all('[data-cart-total]');
    var counts = $all('[data-cart-count]');
    var lineLists = $all('[data-cart-lines]');

    function update() {
      var total = 0;
      var count = 0;
      var lines = [];
      priced.forEach(function (p) {
        var qty = clampQty(p.input);
        if (qty > 0) {
          total += qty * p.price.value;
          count += qty;
          lines.push({ name: p.input.getAttribute('data-name') || '', qty: qty, sum: qty * p.price.value });
        }
      });
      totals.forEach(function (el) { el.textContent = formatLike(template, total, decimals); });
      counts.forEach(function (el) { el.textContent = countFormat.format(count); });
      lineLists.forEach(function (list) {
        while (list.firstChild) { list.removeChild(list.firstChild); }
        if (!lines.length) {
          var empty = doc.createElement('li');
          empty.textContent = list.getAttribute('data-empty') || '';
          list.appendChild(empty);
          return;
        }
        lines.forEach(function (line) {
          var li = doc.createElement('li');
          var name = doc.createElement('span');
          name.textContent = countFormat.format(line.qty) + ' × ' + line.name;
          var sum = doc.createElement('span');
          sum.textContent = formatLike(template, line.sum, decimals);
          li.appendChild(name);
          li.appendChild(sum);
          list.appendChild(li);
        });
      });
    }
    inputs.forEach(function (input) {
      input.addEventListener('input', update);
      input.addEventListener('change', function () {
        input.value = String(clampQty(input));
        update();
      });
    });
    update();
  }
  function initSteppers() {
    $all('[data-step]').forEach(function (button) {
      var input = doc.getElementById(button.getAttribute('aria-controls'));
      if (!input) { return; }
      button.addEventListener('click', function () {
        var next = clampQty(input) + Number(button.getAttribute('data-step'));
        input.value = String(Math.max(0, Math.min(99, next)));
        input.dispatchEvent(new Event('input', { bubbles: true }));
      });
    });
  }

  /* ───────── pricing: monthly / yearly ─────────
   * Yearly shows 10 × the monthly amount ("2 months free"), in the same shape
   * as the customer's price text. Amounts without a number ("Free") stay as is.
   */
  function initBilling() {
    $all('[data-billing]').forEach(function (group) {
      var scope = group.closest('section') || doc;
      var amounts = $all('.tier-amount[data-amount]', scope);
      var pers = $all('.tier-per', scope);
      var buttons = $all('[data-billing-period]', group);
      if (!amounts.length || !buttons.length) { return; }
      function show(period) {
        buttons.forEach(function (b) {
          b.setAttribute('aria-pressed', b.getAttribute('data-billing-period') === period ? 'true' : 'false');
        });
        amounts.forEach(function (el) {
          var original = el.getAttribute('data-amount');
          var price = parsePrice(original);
          if (period === 'year' && price && price.value > 0) {
            el.textContent = formatLike(price, price.value * 10, price.decimals);
          } else {
            el.textContent = original;
          }
        });
        pers.forEach(function (el) {
          el.textContent = el.getAttribute(period === 'year' ? 'data-per-year' : 'data-per-month');
        });
      }
      buttons.forEach(function (b) {
        b.addEventListener('click', function () { show(b.getAttribute('data-billing-period')); });
      });
      group.hidden = false;
    });
  }

  /* ───────── donations ───────── */
  function initDonate() {
    $all('form[data-donate]').forEach(function (form) {
      var summary = form.querySelector('[data-donate-summary]');
      var other = form.querySelector('[data-donate-other]');
      var monthly = form.querySelector('input[name="monthly"]');
      if (!summary) { return; }
      function update() {
        var amount = '';
        if (other && other.value.trim() !== '') {
          var parsed = parsePrice(other.value);
          if (parsed) { amount = numberFormat({ maximumFractionDigits: 2 }).format(parsed.value); }
        } else {
          var checked = form.querySelector('input[name="amount"]:checked');
          if (checked) { amount = checked.value; }
        }
        var label = summary.getAttribute(monthly && monthly.checked ? 'data-monthly-label' : 'data-label');
        summary.textContent = amount ? label + ' ' + amount : '';
      }
      if (other) {
        /* typing an amount of your own un-selects the preset chips, and vice versa */
        other.addEventListener('input', function () {
          if (other.value.trim() !== '') {
            $all('input[name="amount"]', form).forEach(function (r) { r.checked = false; });
          }
        });
        $all('input[name="amount"]', form).forEach(function (r) {
          r.addEventListener('change', function () { other.value = ''; });
        });
      }
      form.addEventListener('input', update);
      form.addEventListener('change', update);
      update();
    });
  }

  /* ───────── form validation ─────────
   * Forms have no action (the prototype's CSP has form-action 'none'):
   * submit is always prevented and a status line explains nothing was sent.
   */
  function todayISO() {
    var d = new Date();
    function pad(n) { return (n < 10 ? '0' : '') + n; }
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate());
  }
  function fieldError(field) {
    var value = (field.value || '').trim();
    if (field.required && field.type !== 'radio' && field.type !== 'checkbox' && value === '') {
      return msg('msg-required', 'Please fill in this field.');
    }
    if (value === '') { return ''; }
    if (field.type === 'email' && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value)) {
      return msg('msg-email', 'Please enter a valid email address.');
    }
    if (field.hasAttribute('data-not-past') && /^\d{4}-\d{2}-\d{2}$/.test(value) && value < todayISO()) {
      return msg('msg-date', 'Please choose a date that is not in the past.');
    }
    if (field.type === 'date' && !/^\d{4}-\d{2}-\d{2}$/.test(value)) {
      return msg('msg-date', 'Please choose a valid date.');
    }
    if (field.type === 'number') {
      var n = Number(value);
      var min = field.getAttribute('min');
      var max = field.getAttribute('max');
      if (!isFinite(n) || (min !== null && n < Number(min)) || (max !== null && n > Number(max))) {
        return msg('msg-number', 'Please enter a valid number.');
      }
    }
    return '';
  }
  function showFieldError(field, text) {
    var box = field.id ? doc.getElementById(field.id + '__err') : null;
    if (text) {
      field.setAttribute('aria-invalid', 'true');
    } else {
      field.removeAttribute('aria-invalid');
    }
    if (box) {
      box.textContent = text;
      box.hidden = !text;
    }
  }
  function initForms() {
    var today = todayISO();
    $all('input[type="date"][data-not-past]').forEach(function (input) {
      input.setAttribute('min', today);
    });
    $all('form[data-pf-form]').forEach(function (form) {
      var status = form.querySelector('.form-status');
      var attempted = false;
      function fields() {
        return $all('input, select, textarea', form).filter(function (f) {
          return f.type !== 'hidden' && f.type !== 'submit' && f.type !== 'button' && !f.disabled;
        });
      }
      function revalidate(event) {
        var field = event.target;
        if (!attempted && event.type === 'input') { return; }
        if (field.matches && field.matches('input, select, textarea')) {
          showFieldError(field, fieldError(field));
        }
      }
      form.addEventListener('input', revalidate);
      form.addEventListener('focusout', function (event) {
        var field = event.target;
        if (field.value && field.matches && field.matches('input, select, textarea')) {
          showFieldError(field, fieldError(field));
        }
      });
      form.addEventListener('submit', function (event) {
        event.preventDefault();
        attempted = true;
        var firstBad = null;
        fields().forEach(function (field) {
          var error = fieldError(field);
          showFieldError(field, error);
          if (error && !firstBad) { firstBad = field; }
        });
        if (status) {
          status.classList.toggle('is-error', !!firstBad);
          status.textContent = firstBad
            ? msg('msg-invalid', 'Please check the highlighted fields.')
            : msg('msg-sent', 'This is a prototype: messages are not sent.');
        }
        if (firstBad) { firstBad.focus(); }
      });
    });
  }

  /* ───────── gallery lightbox ───────── */
  function initLightbox() {
    var lists = $all('[data-lightbox]');
    if (!lists.length || typeof HTMLDialogElement !== 'function') { return; }
    var dialog = doc.createElement('dialog');
    dialog.className = 'lightbox';
    var img = doc.createElement('img');
    img.alt = '';
    var bar = doc.createElement('div');
    bar.className = 'lightbox-bar';
    var caption = doc.createElement('p');
    caption.className = 'lightbox-caption';
    var close = doc.createElement('button');
    close.type = 'button';
    close.className = 'lightbox-close';
    close.textContent = msg('label-close', 'Close');
    close.addEventListener('click', function () { dialog.close(); });
    bar.appendChild(caption);
    bar.appendChild(close);
    dialog.appendChild(img);
    dialog.appendChild(bar);
    dialog.addEventListener('click', function (event) {
      if (event.target === dialog) { dialog.close(); }
    });
    body.appendChild(dialog);
    var opener = null;
    dialog.addEventListener('close', function () {
      if (opener) { opener.focus(); }
    });
    lists.forEach(function (list) {
      list.addEventListener('click', function (event) {
        var link = event.target.closest('a.gallery-link');
        if (!link || !list.contains(link)) { return; }
        event.preventDefault();
        var thumb = link.querySelector('img');
        var figure = link.closest('figure');
        var cap = figure ? figure.querySelector('figcaption') : null;
        img.src = link.getAttribute('href');
        img.alt = thumb ? thumb.alt : '';
        caption.textContent = cap ? cap.textContent : '';
        dialog.setAttribute('aria-label', img.alt || caption.textContent || close.textContent);
        opener = link;
        dialog.showModal();
        close.focus();
      });
    });
  }

  function init() {
    var features = [initNav, initFilters, initSteppers, initCart, initBilling, initDonate, initForms, initLightbox];
    features.forEach(function (feature) {
      try {
        feature();
      } catch (e) {
        /* one broken feature must not take the others down */
        if (window.console) { window.console.error(e); }
      }
    });
  }

  if (doc.readyState === 'loading') {
    doc.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
}());
