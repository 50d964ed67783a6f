// The dashboard: hash routes to pages. A page is async (root, params, onLeave) and registers
// with onLeave what to stop (event streams, charts) when the route changes.
import { takeTokenFromUrl, token, setToken, forgetToken, whenUnauthorized, Unauthorized } from './api.js';
import { h } from './dom.js';
import { listPage } from './pages/list.js';
import { newPage } from './pages/new.js';
import { experimentPage } from './pages/experiment.js';
import { comparePage } from './pages/compare.js';
import { workersPage } from './pages/workers.js';

const ROUTES = [
  [/^\/experiments\/(\d+)$/, experimentPage],
  [/^\/experiments$/, listPage],
  [/^\/new$/, newPage],
  [/^\/compare$/, comparePage],
  [/^\/workers$/, workersPage],
];

const root = document.getElementById('main');
let leaving = [];

function leave() {
  for (const fn of leaving) fn();
  leaving = [];
}

function tokenPage(reason) {
  leave();
  const input = h('input', { type: 'password', placeholder: 'cgp_…', 'aria-label': 'token' });
  const save = (ev) => {
    ev.preventDefault();
    if (!input.value.trim()) return;
    setToken(input.value.trim());
    if (location.hash.startsWith('#/')) route(); else location.hash = '#/experiments';
  };
  root.replaceChildren(h('form', { class: 'token-page', 'data-page': 'token', onsubmit: save },
    h('h1', {}, 'Paste a token'),
    h('p', { class: reason ? 'error' : '' }, reason || 'This dashboard needs an API token.'),
    h('p', {}, 'The server writes its admin token to ', h('code', {}, 'DATA/admin.token'),
      ' at first start (DATA is its --data folder); an admin can make read tokens with POST /api/v1/tokens. ',
      'You can also open the dashboard as ', h('code', {}, '…/#token=TOKEN'), '.'),
    input,
    h('button', { type: 'submit' }, 'Use this token')));
  input.focus();
}

whenUnauthorized(() => {
  forgetToken();
  tokenPage('The server answered 401: the token is missing, unknown or revoked.');
});

async function route() {
  leave();
  if (!token()) return tokenPage();
  const [path, query = ''] = location.hash.slice(1).split('?');
  const found = ROUTES.find(([re]) => re.test(path));
  if (!found) { location.replace('#/experiments'); return; }
  const [re, page] = found;
  const params = { match: path.match(re), query: new URLSearchParams(query) };
  // each page draws into its own element: one left while still loading draws off screen,
  // and stops at once what it starts
  const view = h('div');
  root.replaceChildren(view);
  const mine = [];
  leaving = mine;
  try {
    await page(view, params, (fn) => (leaving === mine ? mine.push(fn) : fn()));
  } catch (e) {
    if (!(e instanceof Unauthorized)) view.append(h('p', { class: 'error' }, `Error: ${e.message}`));
  }
}

takeTokenFromUrl();
window.addEventListener('hashchange', () => { takeTokenFromUrl(); route(); });
route();
