// The app shell: login, navigation between pages (hash routes), toasts.

import { ApiError, clearToken, onLiveChange, onUnauthorized, session, setToken, startEvents, stopEvents } from './api.js';
import { Scope, clear, h } from './dom.js';
import { driversPage } from './drivers.js';
import { sandboxPage } from './sandbox.js';
import { sandboxesPage } from './sandboxes.js';
import { taskPage, tasksPage } from './tasks.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const live = document.getElementById('live');
const logout = document.getElementById('logout');

const routes = [
  [/^\/?(?:sandboxes)?$/, 'sandboxes', sandboxesPage],
  [/^\/sandboxes\/([^/]+)$/, 'sandboxes', sandboxPage],
  [/^\/tasks$/, 'tasks', tasksPage],
  [/^\/tasks\/([^/]+)$/, 'tasks', taskPage],
  [/^\/drivers$/, 'drivers', driversPage],
];

let scope = null;
let loggedIn = false;

function route() {
  if (!loggedIn) return;
  scope?.close();
  scope = new Scope();
  const path = decodeURIComponent(location.hash.replace(/^#/, '')) || '/';
  for (const [re, section, page] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.nav === section);
    clear(main);
    window.scrollTo(0, 0);
    Promise.resolve(page(main, m.slice(1), scope)).catch((e) => showError(e));
    return;
  }
  clear(main, h('section.empty', h('h1', 'Not found'), h('p', 'No page here. '), h('a', { href: '#/sandboxes' }, 'Go to the sandboxes')));
}

function showError(e) {
  if (e?.name === 'AbortError' || (e instanceof ApiError && e.status === 401)) return;
  clear(main, h('section.card.error-card', h('h1', 'Something went wrong'), h('p', e?.message ?? String(e)), h('a', { href: '#/sandboxes' }, 'Back to the sandboxes')));
}

function showLogin(message) {
  loggedIn = false;
  scope?.close();
  scope = null;
  stopEvents();
  nav.hidden = true;
  live.hidden = true;
  logout.hidden = true;
  const input = h('input', {
    id: 'token',
    name: 'token',
    type: 'password',
    autocomplete: 'current-password',
    placeholder: 'stk_…',
    required: true,
    spellcheck: 'false',
  });
  const error = h('p.form-error', { hidden: !message }, message || '');
  const button = h('button.primary', { type: 'submit' }, 'Log in');
  const form = h(
    'form.card.login',
    {
      onsubmit: async (e) => {
        e.preventDefault();
        const token = input.value.trim();
        if (!/^[A-Za-z0-9_.~-]+$/.test(token)) {
          error.textContent = 'A token is letters, digits and _ (it starts with stk_).';
          error.hidden = false;
          return;
        }
        button.disabled = true;
        setToken(token);
        try {
          if (await session()) {
            start();
          } else {
            clearToken();
            error.textContent = 'The daemon does not know this token.';
            error.hidden = false;
            input.select();
          }
        } catch {
          error.textContent = 'The daemon did not answer.';
          error.hidden = false;
        } finally {
          button.disabled = false;
        }
      },
    },
    h('h1', 'Log in to Stockade'),
    h('p.muted', 'This daemon needs a token. Make one on its host with ', h('code', 'stockade token create'), ' and paste it here.'),
    h('label', { for: 'token' }, 'Token'),
    input,
    error,
    button,
  );
  clear(main, h('div.login-wrap', form));
  input.focus();
}

function start() {
  loggedIn = true;
  nav.hidden = false;
  live.hidden = false;
  logout.hidden = false;
  startEvents();
  route();
}

onLiveChange((on) => {
  live.textContent = on ? 'live' : 'offline';
  live.classList.toggle('on', on);
});
onUnauthorized(() => {
  if (loggedIn) showLogin('The daemon no longer accepts this token: log in again.');
});
logout.addEventListener('click', () => {
  clearToken();
  showLogin();
});
window.addEventListener('hashchange', route);

try {
  if (await session()) start();
  else showLogin();
} catch {
  clear(main, h('section.card.error-card', h('h1', 'The daemon did not answer'), h('p', 'Is `stockade serve` still running? Reload this page when it is.')));
}
