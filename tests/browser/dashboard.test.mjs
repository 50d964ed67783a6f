// The dashboard in headless Chromium (playwright-core), against the server and data that
// tests/cli/browser.sh seeds; environment: BASE, TOKEN, WORKER_TOKEN, WORKER_ID, EXP_A, EXP_B,
// EXP_BIG, NEXT_SEQ_A, CHROMIUM, SCREENSHOTS. Prints "ok NAME" or "FAIL NAME" (details indented)
// per check; exits 1 when any failed. Any console error or page error fails the run.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const require = createRequire(new URL('../../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const env = process.env;
const { BASE, TOKEN, EXP_A: A, EXP_B: B, EXP_C: C, EXP_BIG: BIG } = env;
let seqA = Number(env.NEXT_SEQ_A);
let failures = 0;

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n  ${String(e.message || e).split('\n').slice(0, 4).join('\n  ')}`);
  }
}
function assert(cond, message) { if (!cond) throw new Error(message); }

// Posts one metrics event for experiment A as the worker (the live-update source).
async function postMetrics(iteration, values) {
  const r = await fetch(`${BASE}/api/v1/experiments/${A}/events`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env.WORKER_TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ worker_id: env.WORKER_ID, events: [{ seq: seqA++, type: 'metrics', data: { iteration, values } }] }),
  });
  assert(r.ok, `events: HTTP ${r.status}`);
}

const browser = await chromium.launch({ executablePath: env.CHROMIUM, args: ['--no-sandbox'] });
const shot = (page, name) => page.screenshot({ path: `${env.SCREENSHOTS}/${name}.png`, fullPage: true });
try {
  // Without a token, and with a wrong one: the token page (the 401 is expected, so this
  // context does not watch the console).
  const anon = await browser.newPage();
  await check('without a token the dashboard asks for one, saying where to find it', async () => {
    await anon.goto(`${BASE}/#/experiments`);
    await anon.waitForSelector('[data-page=token]');
    assert((await anon.textContent('[data-page=token]')).includes('DATA/admin.token'), 'no hint about DATA/admin.token');
    await shot(anon, '01-token');
  });
  await check('a wrong token: the server answers 401 and the token page says so', async () => {
    await anon.goto(`${BASE}/#token=cgp_wrong`);
    await anon.waitForSelector('[data-page=token] .error');
    assert((await anon.textContent('[data-page=token]')).includes('401'), 'no 401 message');
  });
  await anon.close();

  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  let expect400 = false; // the invalid config's answer, which Chromium logs as a failed load
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (expect400 && m.text().includes('status of 400')) { expect400 = false; return; }
    errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  const rowOf = (id) => `table[data-page=list] tr[data-id="${id}"]`;

  await check('#token= opens the list with the seeded experiments, and leaves the URL', async () => {
    await page.goto(`${BASE}/#token=${TOKEN}`);
    await page.waitForSelector(rowOf(A));
    await page.waitForSelector(rowOf(B));
    const rowA = await page.textContent(rowOf(A));
    assert(rowA.includes('alpha-chunk') && rowA.includes('chunk_grpo') && rowA.includes('running'), `row A: ${rowA}`);
    assert(rowA.includes('40/50') && rowA.includes('ETA'), `no progress with ETA: ${rowA}`);
    assert(await page.$(`${rowOf(A)} svg.spark polyline`), 'no sparkline');
    assert(!page.url().includes('token='), `token still in the URL: ${page.url()}`);
    assert(await page.evaluate(() => localStorage.getItem('chunkgrpo.token')) === TOKEN, 'token not kept');
    await shot(page, '02-list');
  });
  await check('the status filter narrows the list', async () => {
    await page.selectOption('select[aria-label=status]', 'queued');
    await page.waitForSelector('table[data-page=list] tr:has-text("queued-eval")');
    const statuses = await page.$$eval('table[data-page=list] tr[data-id] .status', (s) => s.map((x) => x.textContent));
    await page.selectOption('select[aria-label=status]', '');
    await page.waitForSelector(rowOf(A));
    assert(statuses.length && statuses.every((s) => s === 'queued'), `statuses: ${statuses}`);
  });
  await check('the list updates live from the event stream', async () => {
    await page.waitForSelector('body[data-live]');
    await postMetrics(41, { reward_mean: 0.987654 });
    await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.includes('0.9877'), `${rowOf(A)} td[data-reward]`, { timeout: 5000 });
  });

  await check('an invalid config: the server\'s message and the field\'s line are shown', async () => {
    await page.goto(`${BASE}/#/new`);
    await page.fill('textarea[aria-label=config]', JSON.stringify({ kind: 'grpo', iterations: 5, lr: 'fast' }, null, 2));
    expect400 = true;
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-error]:not(:empty)');
    const msg = await page.textContent('[data-error]');
    assert(msg.includes('config.lr') && msg.includes('line 4'), `message: ${msg}`);
    assert((await page.textContent('.gutter .bad')).trim() === '4', 'line 4 not marked');
    assert((await page.textContent('[data-field-error=lr]')).includes('config.lr'), 'no error at the lr field');
    await shot(page, '03-new-error');
  });
  await check('the form and the JSON editor follow each other', async () => {
    // the demo preset is the shipped config
    const demo = JSON.parse(readFileSync(new URL('../../deploy/experiments/demo-chunk-grpo.json', import.meta.url)));
    await page.selectOption('select[aria-label=preset]', `Demo (Chunk-GRPO, ${demo.iterations} iterations)`);
    assert(await page.inputValue('[data-fields] [aria-label=iterations]') === String(demo.iterations), 'iterations not in the form');
    await page.fill('[data-fields] [aria-label=lr]', '0.0003');
    const config = JSON.parse(await page.inputValue('textarea[aria-label=config]'));
    assert(config.lr === 0.0003 && config.iterations === demo.iterations && config.beta1 === demo.beta1, `editor after the form: ${JSON.stringify(config)}`);
    await page.fill('textarea[aria-label=config]', JSON.stringify({ ...config, group_size: 4, method: 'grpo' }, null, 2));
    assert(await page.inputValue('[data-fields] [aria-label=group_size]') === '4', 'group_size not taken from the editor');
    assert(await page.inputValue('[data-fields] [aria-label=method]') === 'grpo', 'method not taken from the editor');
    await page.selectOption('[data-fields] [aria-label=kind]', 'eval');
    assert(await page.$('[data-fields] [aria-label=model]') && !(await page.$('[data-fields] [aria-label=lr]')), 'eval fields');
    const evalConfig = JSON.parse(await page.inputValue('textarea[aria-label=config]'));
    assert(evalConfig.kind === 'eval', 'kind not in the editor');
    // the grpo-only fields go, those eval has too (group_size, model, seed) stay
    assert(!('lr' in evalConfig) && !('iterations' in evalConfig) && !('method' in evalConfig) && evalConfig.group_size === 4 && evalConfig.model && evalConfig.seed !== undefined,
      `fields after switching kind: ${JSON.stringify(evalConfig)}`);
    await shot(page, '03-new-form');
  });
  await check('a valid preset submitted appears in the list', async () => {
    await page.selectOption('select[aria-label=preset]', 'Step-level GRPO');
    await page.fill('input[aria-label=name]', 'from-the-form');
    await page.click('button[type=submit]');
    await page.waitForSelector('table[data-page=list] tr:has-text("from-the-form")');
    assert((await page.textContent('table[data-page=list] tr:has-text("from-the-form")')).includes('queued'), 'not queued');
  });

  await check('the experiment page draws its charts, logs and artifacts', async () => {
    await page.goto(`${BASE}/#/experiments/${A}`);
    await page.waitForSelector('[data-charts-drawn]');
    assert(await page.getAttribute('[data-chart="reward (mean)"]', 'data-points') === '41', 'reward chart points');
    assert(await page.getAttribute('[data-chart="eval align (held-out ODE)"]', 'data-points') === '5', 'eval chart points');
    assert((await page.$$('.chart canvas')).length >= 8, 'fewer than 8 charts');
    await page.waitForFunction(() => document.querySelector('[data-logs]').textContent.includes('seeded by browser.sh'));
    assert((await page.textContent('main')).includes('groups/iter-0000020.json'), 'artifact list');
  });
  await check('the charts grow live from the experiment\'s event stream', async () => {
    await page.waitForSelector('body[data-live]');
    await postMetrics(42, { reward_mean: 0.99, loss: 0.01 });
    await page.waitForFunction(() => document.querySelector('[data-chart="reward (mean)"]').dataset.points === '42', null, { timeout: 5000 });
  });
  await check('charts of the per-chunk ratios and the reward components, grown live', async () => {
    const legend = (title) => page.$$eval(`[data-chart="${title}"] .u-legend .u-series`, (s) => s.slice(1).map((x) => x.querySelector('.u-label').textContent));
    assert((await legend('ratio per chunk')).join() === 'chunk 0,chunk 1,chunk 2', `chunks: ${await legend('ratio per chunk')}`);
    assert((await legend('reward per component')).join() === 'align,count', `components: ${await legend('reward per component')}`);
    await postMetrics(43, { 'chunk_ratio.3.mean': 1.01, reward_mean: 0.99 });
    await page.waitForFunction(() => document.querySelectorAll('[data-chart="ratio per chunk"] .u-legend .u-series').length === 5, null, { timeout: 5000 });
  });
  await check('a reward server\'s score of the evaluations, charted when the run logs it', async () => {
    const chart = '[data-chart="other rewards in evaluations"]';
    assert((await page.$$eval(`${chart} .u-legend .u-series`, (s) => s.slice(1).map((x) => x.querySelector('.u-label').textContent))).join() === 'remote, held out',
      'no chart of eval_remote');
    assert(await page.getAttribute(chart, 'data-points') === '4', `points: ${await page.getAttribute(chart, 'data-points')}`);
  });
  await check('align by caption template: held out and training, first against latest, grown live', async () => {
    const row = (t) => page.$$eval(`[data-template-table] tr[data-template="${t}"] td`, (c) => c.map((e) => e.textContent));
    assert((await page.$$eval('[data-template-table] tbody tr', (r) => r.map((e) => e.dataset.template))).join() === 'count,pair,all',
      'rows not in the templates\' order, with all last');
    assert((await row('pair')).join() === 'pair,0.3,0.34,+0.04,0.5,0.62,+0.12', `pair: ${await row('pair')}`);
    assert((await row('count')).join() === 'count,0.6,0.68,+0.08,,,', `count: ${await row('count')}`);
    assert((await page.textContent('[data-template-table] thead')).includes('iteration 0 → 40'), 'the span of the evaluations');
    assert((await page.$$eval('[data-chart="held-out align by template"] .u-legend .u-series', (s) => s.slice(1).map((x) => x.querySelector('.u-label').textContent))).join() === 'count,pair',
      'no chart of the template means');
    await postMetrics(50, { 'eval_template.pair': 0.4 });
    await page.waitForFunction(() => document.querySelector('[data-template-table] tr[data-template="pair"] td:nth-child(4)')?.textContent === '+0.1', null, { timeout: 5000 });
  });
  await check('the profile: the relative-L1 curve per step with the chunk boundaries', async () => {
    await page.waitForSelector('[data-profile] [data-chart="relative L1 per step"][data-points="16"]');
    assert(await page.getAttribute('[data-profile] .chart', 'data-marks') === '2', 'not two chunk boundaries');
    assert((await page.textContent('[data-profile]')).includes('[4,4,8]'), 'chunks not shown');
  });
  await check('the gallery shows the eval grid and its slider moves through iterations', async () => {
    await page.waitForFunction(() => document.querySelector('[data-gallery] img')?.naturalWidth === 64);
    assert((await page.textContent('[data-gallery]')).includes('iteration 20'), 'not at the last iteration');
    await page.fill('[data-gallery] input[type=range]', '0');
    await page.waitForFunction(() => document.querySelector('[data-gallery]').textContent.includes('iteration 10'));
    await page.waitForFunction(() => document.querySelector('[data-gallery] img')?.naturalWidth === 64);
  });
  await check('the group view shows rewards (components on hover), advantages (per chunk too), chunk ratios and flags equal rewards', async () => {
    await page.waitForSelector('table.flagged');
    const t = await page.textContent('table.flagged');
    assert(t.includes('1.001') && t.includes('-1'), `group table: ${t}`);
    // per-chunk rewards: each chunk's advantage in its own column, the components on hover
    assert(await page.$$eval('table.flagged [data-chunk-advantage]', (c) => c.map((e) => e.textContent).join(' ')) === '0.25 1 -0.75 -0.25 -1 0.75',
      'per-chunk advantages');
    assert((await page.getAttribute('table.flagged tbody td:nth-child(2)', 'title')).includes('clean 0.9'), 'components on hover');
    assert((await page.textContent('main')).includes('all rewards equal'), 'no flag');
    await shot(page, '04-experiment');
  });

  await check('clone: the New page with the config, submitted as the changes only (a removed field as null)', async () => {
    await page.click('a:has-text("Clone")');
    await page.waitForSelector(`form[data-clone="${A}"] [data-fields]`);
    assert(await page.inputValue('input[aria-label=name]') === 'copy of alpha-chunk', 'name');
    assert(JSON.parse(await page.inputValue('textarea[aria-label=config]')).iterations === 50, 'config not prefilled');
    await page.fill('[data-fields] [aria-label=iterations]', '60');
    await page.fill('[data-fields] [aria-label=seed]', ''); // removed: sent as null, the default applies
    assert(!('seed' in JSON.parse(await page.inputValue('textarea[aria-label=config]'))), 'seed still in the editor');
    const [request] = await Promise.all([page.waitForRequest((r) => r.url().endsWith(`/experiments/${A}/clone`)), page.click('button[type=submit]')]);
    const body = request.postDataJSON();
    assert(JSON.stringify(body) === JSON.stringify({ changes: { seed: null, iterations: 60 }, name: 'copy of alpha-chunk' }), `body: ${request.postData()}`);
    await page.waitForSelector('h1:has-text("copy of alpha-chunk")');
    assert((await page.textContent('main')).includes('"iterations": 60'), 'the clone\'s config');
  });

  await check('compare: overlaid curves, final eval align with the gain over the base and the relative gain, the config diff', async () => {
    await page.goto(`${BASE}/#/compare?ids=${A},${B}`);
    await page.waitForSelector('table[data-diff]');
    assert((await page.$$('[data-page=compare] .chart')).length === 2, 'two charts');
    const final = await page.textContent('table[data-final]');
    // A: 0.45 -> 0.519, B: 0.45 -> 0.469; the paper's relative gain is over the first (A)
    assert(final.includes('0.45') && final.includes('0.519'), `final table: ${final}`);
    const col = (a) => page.$$eval(`table[data-final] [${a}]`, (c) => c.map((e) => e.textContent).join(' '));
    assert(await col('data-gain') === '+0.06903 +0.01903', `gains: ${await col('data-gain')}`);
    assert(await col('data-relative-gain') === '1.00 0.28', `relative gains: ${await col('data-relative-gain')}`);
    assert((await page.textContent('table[data-diff]')).includes('method'), 'the diff lacks method');
    // per template: A's pair rose to 0.4 live (from 0.3 at iteration 0), B's to 0.34
    const tpl = await page.$$eval('table[data-final-templates] tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent).join('|')));
    assert(tpl[0] === 'experiment|count|pair|all', `template header: ${tpl[0]}`);
    assert(tpl[1].endsWith('|0.68 (+0.08)|0.4 (+0.1)|0.519 (+0.069)') && tpl[2].endsWith('|0.68 (+0.08)|0.34 (+0.04)|0.469 (+0.019)'),
      `template rows: ${tpl.slice(1)}`);
    await page.waitForFunction(() => [...document.querySelectorAll('[data-compare-gallery] img')].filter((i) => i.naturalWidth === 64).length === 1);
    assert((await page.textContent('[data-compare-gallery]')).includes('no grid at this iteration'), 'B has no grid at 20');
    await page.fill('[data-compare-gallery] input[type=range]', '0');
    await page.waitForFunction(() => [...document.querySelectorAll('[data-compare-gallery] img')].filter((i) => i.naturalWidth === 64).length === 2);
    await shot(page, '05-compare');
  });
  await check('compare: runs that differ only in the seed are one method, its mean and spread over seeds', async () => {
    await page.goto(`${BASE}/#/compare?ids=${A},${C},${B}`);
    await page.waitForSelector('table[data-over-seeds]');
    const rows = await page.$$eval('table[data-over-seeds] tbody tr', (rs) => rs.map((r) => [...r.children].map((c) => c.textContent)));
    // A 0.519 and C 0.499 (gains +0.069, +0.049) against B alone, 0.469 (+0.019)
    assert(rows.length === 2, `rows: ${JSON.stringify(rows)}`);
    assert(rows[0][0].includes('alpha-chunk') && rows[0][1] === '2' && rows[0][2].endsWith(', 7') &&
      rows[0].slice(3).join(' ') === '0.509 0.01414 +0.05903 1.00', `A and C: ${rows[0]}`);
    assert(rows[1][0].includes('beta-step') && rows[1][1] === '1' && rows[1].slice(3).join(' ') === '0.469 – +0.01903 0.32', `B: ${rows[1]}`);
    assert((await page.$$('table[data-final] tbody tr')).length === 3, 'the per-run table keeps every run');
  });
  await check('an experiment that is not a GRPO run has no evaluation-by-template section', async () => {
    const r = await fetch(`${BASE}/api/v1/experiments?limit=200`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    const ev = (await r.json()).items.find((e) => e.name === 'queued-eval');
    await page.goto(`${BASE}/#/experiments/${ev.id}`);
    await page.waitForSelector('[data-charts-drawn]');
    assert(!(await page.$('[data-templates]')) && !(await page.textContent('main')).includes('caption template'), 'a template section on an eval experiment');
  });
  await check('a learned reward\'s run: pair accuracy, and held out by degradation', async () => {
    const r = await fetch(`${BASE}/api/v1/experiments?limit=200`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    const pref = (await r.json()).items.find((e) => e.name === 'pref-reward');
    await page.goto(`${BASE}/#/experiments/${pref.id}`);
    await page.waitForSelector('[data-charts-drawn]');
    const legend = (title) => page.$$eval(`[data-chart="${title}"] .u-legend .u-series`, (s) => s.slice(1).map((x) => x.querySelector('.u-label').textContent));
    assert((await legend('pair accuracy')).join() === 'training batches,held out', `pair accuracy: ${await legend('pair accuracy')}`);
    assert((await legend('held-out pair accuracy by degradation')).join() === 'colour,noise',
      `by degradation: ${await legend('held-out pair accuracy by degradation')}`);
    assert(!(await page.$('[data-templates]')), 'a template section on a reward_train experiment');
  });
  await check('workers: the registered worker with its device', async () => {
    await page.goto(`${BASE}/#/workers`);
    const t = await page.textContent('table[data-page=workers]');
    assert(t.includes('browser-w1') && t.includes('test cpu'), `workers: ${t}`);
  });

  await check('an experiment with 10,000 points per series and 200 images opens', async () => {
    await page.goto('about:blank');
    const t0 = Date.now();
    await page.goto(`${BASE}/#/experiments/${BIG}`);
    await page.waitForSelector('[data-charts-drawn]', { timeout: 30000 });
    const ms = Date.now() - t0;
    const series = await page.$$eval('.chart', (cs) => cs.reduce((n, c) => n + c.querySelectorAll('.u-legend .u-series').length - 1, 0));
    const points = await page.getAttribute('[data-chart="reward (mean)"]', 'data-points');
    console.log(`experiment page with 10000 points x ${series} series and 200 images opened in ${ms} ms (charts drawn with ${points} points per series, downsampled by the server)`);
    assert(points === '2000', `points: ${points}`);
    await page.waitForFunction(() => document.querySelector('[data-gallery] img')?.naturalWidth === 64);
    await shot(page, '06-big-experiment');
  });

  await check('no console error and no page error', async () => {
    assert(errors.length === 0, errors.join('\n'));
  });
} finally {
  await browser.close();
}
process.exit(failures ? 1 : 0);
