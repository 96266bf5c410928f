// Browser tests of the web UI in headless Chromium (Debian's, driven by playwright-core), against
// a running `stockade serve`. scripts/ui-test starts the daemon and sets:
//   STOCKADE_URL    http://127.0.0.1:PORT
//   STOCKADE_TOKEN  a token of that daemon
//   UI_SCREENSHOTS  where the screenshots go (default target/ui-screenshots)
//   CHROMIUM        the browser (default /usr/bin/chromium)
// Every page is checked for console errors and uncaught exceptions, and photographed at
// 1280×800 and at 390×844.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, test } from 'node:test';

const URL_ = process.env.STOCKADE_URL;
const TOKEN = process.env.STOCKADE_TOKEN;
const SHOTS = process.env.UI_SCREENSHOTS || 'target/ui-screenshots';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

if (!URL_ || !TOKEN) {
  if (process.env.CI === 'true') throw new Error('STOCKADE_URL and STOCKADE_TOKEN must be set (run scripts/ui-test)');
}
const skip = !URL_ || !TOKEN ? 'STOCKADE_URL and STOCKADE_TOKEN are not set: run scripts/ui-test' : false;

let browser;
const problems = [];
const allowed = []; // messages a step expects, e.g. the 400 of a refused form

before(async () => {
  if (skip) return;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

/** A page whose console errors and uncaught exceptions are collected. */
async function newPage(viewport, { loggedIn = true } = {}) {
  const context = await browser.newContext({ viewport });
  if (loggedIn) {
    const { hostname } = new URL(URL_);
    await context.addCookies([{ name: 'stockade_token', value: TOKEN, domain: hostname, path: '/', sameSite: 'Strict' }]);
  }
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const i = allowed.findIndex((re) => re.test(m.text()));
    if (i >= 0) allowed.splice(i, 1);
    else problems.push(`console error on ${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught exception on ${page.url()}: ${e.message}`));
  return page;
}

async function shot(page, name) {
  const w = page.viewportSize().width;
  // Let fonts, charts and layout settle; from the top, or the sticky header lands mid-page.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(300);
  await page.screenshot({ path: `${SHOTS}/${w <= 500 ? 'phone' : 'desktop'}-${name}.png`, fullPage: true });
}

async function go(page, hash) {
  await page.goto(`${URL_}/${hash}`);
}

async function noSideways(page) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `${page.url()} scrolls sideways by ${overflow}px at ${page.viewportSize().width}px`);
}

async function apiCall(path, body, method = body ? 'POST' : 'GET') {
  const res = await fetch(`${URL_}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}

async function terminalText(page) {
  return page.evaluate(() => document.querySelector('.term .xterm-rows')?.textContent ?? '');
}

const state = {};

test('the web UI', { skip, timeout: 300_000 }, async (t) => {
  const page = await newPage(DESKTOP, { loggedIn: false });

  await t.test('asks for a token, refuses a wrong one, takes the right one', async () => {
    await page.goto(URL_);
    await page.waitForSelector('form.login');
    await shot(page, 'login');
    await page.fill('#token', 'stk_0000000000000000000000000000');
    await page.click('form.login button[type=submit]');
    await page.waitForSelector('form.login .form-error:not([hidden])');
    assert.match(await page.textContent('form.login .form-error'), /does not know this token/);
    await page.fill('#token', TOKEN);
    await page.click('form.login button[type=submit]');
    await page.waitForSelector('h1:text-is("Sandboxes")');
    await page.waitForSelector('#live.on');
  });

  await t.test('shows a refused sandbox form’s error as a message, not JSON', async () => {
    await page.click('#new-sandbox');
    await page.fill('#f-memory', 'lots');
    allowed.push(/status of 400/);
    await page.click('#create-sandbox button[type=submit]');
    const error = page.locator('#create-sandbox .form-error');
    await error.waitFor();
    const text = await error.textContent();
    assert.match(text, /memory/i);
    assert.doesNotMatch(text, /[{}]/, `raw JSON shown: ${text}`);
    assert.equal(await page.getAttribute('#f-memory', 'aria-invalid'), 'true');
    await page.fill('#f-memory', '');
    // Editing the field at fault clears the error.
    await error.waitFor({ state: 'hidden' });
  });

  await t.test('creates a sandbox from the form and opens its page', async () => {
    state.name = `ui-${Date.now().toString(36)}`;
    await page.fill('#f-name', state.name);
    await page.fill('#f-code', 'empty');
    await page.fill('#f-memory', '512m');
    await page.fill('#f-pids', '256');
    await shot(page, 'sandboxes-new');
    await page.click('#create-sandbox button[type=submit]');
    await page.waitForURL(/#\/sandboxes\/[0-9a-f]+$/);
    state.id = page.url().split('/').pop();
    await page.waitForSelector(`h1:has-text("${state.name}")`);
  });

  await t.test('runs a command in the terminal', async () => {
    await page.waitForSelector('.term .xterm-rows', { timeout: 10_000 }).catch(async () => {
      const text = await page.textContent('.term');
      throw new Error(`no terminal: ${text}`);
    });
    await page.waitForFunction(() => document.querySelector('.term-state')?.textContent === 'connected');
    // A prompt first, so the shell reads what is typed.
    await page.waitForFunction(() => [...document.querySelectorAll('.term .xterm-rows > div')].some((row) => /[#$]$/.test(row.textContent.trimEnd())));
    await page.click('.term');
    await page.keyboard.type('echo ui-$((6*7)) | tee ui-file.txt');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => (document.querySelector('.term .xterm-rows')?.textContent ?? '').includes('ui-42'));
    assert.match(await terminalText(page), /ui-42/);
    // The sandbox has code (`empty`), so a baseline: the new file shows as a change.
    await page.click('.changes-card button:text-is("Refresh")');
    await page.waitForSelector('.changes-card .diff .fpath:text-is("ui-file.txt")');
  });

  await t.test('browses files and views one', async () => {
    await page.click('.files-card button:text-is("Refresh")');
    await page.click('.files-card button.entry:has-text("ui-file.txt")');
    await page.waitForFunction(() => document.querySelector('.files-card pre.file-text')?.textContent.includes('ui-42'));
    const href = await page.getAttribute('.files-card .viewer a:text-is("Download")', 'href');
    assert.match(href, /\/files\?path=%2Fworkspace%2Fui-file\.txt$/);
    const res = await page.evaluate(async (u) => (await fetch(u)).text(), href);
    assert.equal(res.trim(), 'ui-42');
  });

  await t.test('replays an exec from the history', async () => {
    await apiCall(`/api/sandboxes/${state.id}/execs?wait=true&encoding=text`, { argv: ['sh', '-c', 'echo replay-me; echo oops >&2; exit 3'] });
    const item = page.locator('.execs-card button.exec', { hasText: 'replay-me' });
    await item.waitFor();
    await item.click();
    await page.waitForFunction(() => {
      const out = document.querySelector('.execs-card pre.output');
      return out?.textContent.includes('replay-me') && out.querySelector('.stderr')?.textContent.includes('oops');
    });
    await page.waitForSelector('.execs-card .replay .viewer-head:has-text("exit 3")');
  });

  await t.test('charts CPU and memory', async () => {
    await page.waitForFunction(() => [...document.querySelectorAll('.stats-card .chart-value')].every((e) => e.textContent !== '–'), null, { timeout: 15_000 });
    await page.waitForSelector('.stats-card svg.plot path[d^="M"]');
    await shot(page, 'sandbox');
  });

  await t.test('lists the sandbox with status, driver, age, CPU and memory', async () => {
    await go(page, '#/sandboxes');
    const row = page.locator(`tr[data-id="${state.id}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), /running/);
    assert.match(await row.textContent(), /native/);
    await page.waitForFunction((id) => {
      const text = document.querySelector(`tr[data-id="${id}"]`)?.textContent ?? '';
      return /[KMG]iB/.test(text) && /\d %/.test(text);
    }, state.id);
    await shot(page, 'sandboxes');
  });

  await t.test('runs a command: task and shows its patch', async () => {
    await go(page, '#/tasks');
    await page.waitForSelector('#task-form');
    await page.fill('#f-code', 'empty');
    await page.fill('#f-agent', 'command:echo hi > hi.txt');
    await page.fill('#f-prompt', 'Write hi into hi.txt');
    await page.fill('#f-name', 'say hi');
    await page.click('#task-form button[type=submit]');
    await page.waitForURL(/#\/tasks\/[0-9a-z]+$/);
    state.task = page.url().split('/').pop();
    await page.waitForSelector('.diff .fpath:text-is("hi.txt")', { timeout: 120_000 });
    assert.match(await page.textContent('.diff'), /hi/);
    await page.waitForSelector('h1 .badge:text-is("succeeded")');
    await page.waitForSelector('pre.log .progress');
    await shot(page, 'task');
    await go(page, '#/tasks');
    const row = page.locator(`tr[data-id="${state.task}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), /succeeded/);
    assert.match(await row.textContent(), /\+1/);
    await shot(page, 'tasks');
  });

  await t.test('shows the drivers, each with its description and summary', async () => {
    const drivers = await apiCall('/api/drivers');
    await go(page, '#/drivers');
    await page.waitForSelector('.driver[data-driver="native"] .badge');
    assert.equal(await page.locator('.driver').count(), drivers.length);
    assert.match(await page.textContent('.driver[data-driver="native"]'), /available/);
    for (const d of drivers) {
      const card = `.driver[data-driver="${d.name}"]`;
      assert.equal(await page.textContent(`${card} .description`), d.description);
      if (d.summary) assert.equal(await page.textContent(`${card} .summary`), d.summary);
      else assert.equal(await page.locator(`${card} .summary`).count(), 0);
    }
  });

  // scripts/ui-test runs stockade-with-fake: the stockade binary plus one registered driver, the
  // in-memory fake, which the UI must show with no change of its own.
  await t.test('shows a registered driver (the fake) and counts its sandboxes', async (t) => {
    const before = (await apiCall('/api/drivers')).find((d) => d.name === 'fake');
    const why = 'the daemon has no driver "fake": run scripts/ui-test with target/debug/stockade-with-fake';
    if (!before && process.env.CI !== 'true') return t.skip(why);
    assert.ok(before, why);
    const made = await apiCall('/api/sandboxes', { driver: 'fake', name: `ui-fake-${Date.now().toString(36)}` });
    state.fake = made.id;
    assert.equal(made.driver, 'fake');
    // Already on the page: its Refresh button reads the drivers again.
    await page.click('.page-head button:text-is("Refresh")');
    const card = page.locator('.driver[data-driver="fake"]');
    const count = `${before.sandboxes + 1} sandbox${before.sandboxes + 1 === 1 ? '' : 'es'}`;
    await page.waitForFunction((want) => document.querySelector('.driver[data-driver="fake"] .count')?.textContent === want, count);
    assert.equal(await card.locator('.badge').textContent(), 'available');
    assert.equal(await card.locator('.description').textContent(), 'in memory, for tests: no isolation, no processes');
    assert.equal(await card.locator('.summary').textContent(), 'in memory');
    await shot(page, 'drivers');
    // ...and the forms offer it.
    await go(page, '#/sandboxes');
    await page.click('#new-sandbox');
    await page.waitForSelector('#f-driver option[value="fake"]:not([disabled])', { state: 'attached' });
    await go(page, '#/tasks');
    await page.waitForSelector('#f-task-driver option[value="fake"]:not([disabled])', { state: 'attached' });
  });

  await t.test('works on a phone', async () => {
    const phone = await newPage(PHONE);
    for (const [name, hash, ready] of [
      ['sandboxes', '#/sandboxes', `tr[data-id="${state.id}"]`],
      ['sandbox', `#/sandboxes/${state.id}`, '.term .xterm-rows'],
      ['tasks', '#/tasks', `tr[data-id="${state.task}"]`],
      ['task', `#/tasks/${state.task}`, '.diff .fpath'],
      ['drivers', '#/drivers', '.driver .badge'],
    ]) {
      await go(phone, hash);
      await phone.waitForSelector(ready);
      if (name === 'sandbox') {
        await phone.waitForFunction(() => document.querySelector('.term-state')?.textContent === 'connected');
        await phone.waitForFunction(() => [...document.querySelectorAll('.stats-card .chart-value')].every((e) => e.textContent !== '–'));
      }
      await noSideways(phone);
      await shot(phone, name);
      if (name === 'sandboxes') {
        await phone.click('#new-sandbox');
        await phone.click('#create-sandbox details.more summary');
        await noSideways(phone);
        await shot(phone, 'sandboxes-new');
      }
    }
    // The terminal was fitted to the phone's width.
    await go(phone, `#/sandboxes/${state.id}`);
    await phone.waitForSelector('.term .xterm-screen');
    const [screen, box] = await phone.evaluate(() => [
      document.querySelector('.term .xterm-screen').getBoundingClientRect().width,
      document.querySelector('.term').clientWidth,
    ]);
    assert.ok(screen > 200 && screen <= box, `the terminal is ${screen}px wide in a ${box}px box`);
    // ...and the shell was told: its PTY has the phone's columns.
    await phone.waitForFunction(() => document.querySelector('.term-state')?.textContent === 'connected');
    await phone.click('.term');
    await phone.keyboard.type('stty size');
    await phone.keyboard.press('Enter');
    const size = await phone.waitForFunction(() => {
      const rows = [...document.querySelectorAll('.term .xterm-rows > div')].map((r) => r.textContent.trim());
      return rows.find((r) => /^\d+ \d+$/.test(r));
    });
    const [, cols] = (await size.jsonValue()).split(' ').map(Number);
    assert.ok(cols >= 30 && cols <= 50, `the shell's terminal is ${cols} columns wide on a phone`);
    await phone.context().close();
    const login = await newPage(PHONE, { loggedIn: false });
    await login.goto(URL_);
    await login.waitForSelector('form.login');
    await noSideways(login);
    await shot(login, 'login');
    await login.context().close();
  });

  await t.test('deletes the sandbox from the list', async () => {
    await go(page, '#/sandboxes');
    const del = page.locator(`tr[data-id="${state.id}"] button:has-text("Delete")`);
    await del.click();
    await page.locator(`tr[data-id="${state.id}"] button:has-text("Delete?")`).click();
    await page.waitForSelector(`tr[data-id="${state.id}"]`, { state: 'detached' });
    if (state.fake) {
      await apiCall(`/api/sandboxes/${state.fake}`, null, 'DELETE');
      await page.waitForSelector(`tr[data-id="${state.fake}"]`, { state: 'detached' });
    }
  });

  await t.test('logged no console errors and threw nothing', () => {
    assert.deepEqual(problems, []);
  });
  await page.context().close();
});
