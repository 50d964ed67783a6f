// One experiment: status and actions, live charts, the temporal-dynamics profile, held-out and
// training-prompt align by caption template, the eval gallery, the rollout group view, logs and
// artifacts. Live updates come from the experiment's event stream, resumed after the metrics
// history's last event so nothing is missed or counted twice.
import { api, blobUrl, subscribe } from '../api.js';
import { h, fmt, statusBadge, progressBar } from '../dom.js';
import { Chart } from '../charts.js';

const CHARTS = [
  ['reward (mean)', ['reward_mean']],
  ['eval align (held-out ODE)', ['eval_align', 'eval_best_of_seeds', 'eval_train_align']],
  ['loss', ['loss']],
  ['clip fraction', ['clip_fraction']],
  ['approximate KL', ['approx_kl']],
  ['grad norm', ['grad_norm']],
  ['seconds per phase', ['sec_sampling', 'sec_reward', 'sec_optimize']],
  ['images per second', ['images_per_sec']],
];
// Charts of the keys found in the metrics (the chunks and reward components vary by config):
// [title, key pattern, legend label of a key].
const FOUND = [
  ['ratio per chunk', /^chunk_ratio\.\d+\.mean$/, (k) => `chunk ${k.split('.')[1]}`],
  ['reward per component', /^reward_.+_mean$/, (k) => k.slice('reward_'.length, -'_mean'.length)],
  // the evaluations' samples scored by the learned models (pref_model, clip_model) or a reward
  // server (remote_url), beside align: a proxy's view next to the gold
  ['other rewards in evaluations', /^eval_(?:train_)?(?:pref|clip|remote)$/,
    (k) => `${k.replace(/^eval_(?:train_)?/, '')}, ${k.includes('train') ? 'training prompts' : 'held out'}`],
  // a reward_train run: how often the model prefers the clean image of a pair
  ['pair accuracy', /^(?:eval_)?accuracy$/, (k) => (k === 'accuracy' ? 'training batches' : 'held out')],
  ['held-out pair accuracy by degradation', /^eval_accuracy_by\./, (k) => k.slice('eval_accuracy_by.'.length)],
  ['held-out align by template', /^eval_template\./, (k) => k.slice('eval_template.'.length)],
  ['training-prompt align by template', /^eval_train_template\./, (k) => k.slice('eval_train_template.'.length)],
];
// The world's caption templates in docs/prompts.md's order; others (none today) after them.
export const TEMPLATES = ['plain', 'sized', 'positioned', 'count', 'pair', 'relation'];
const TEMPLATE_KEY = /^eval_(?:train_)?template\.(.+)$/;
const byNumber = (a, b) => a.localeCompare(b, 'en', { numeric: true });
export const GALLERY = /^eval\/iter-(\d+)\/ode_grid\.png$/;
const GROUP = /^groups\/iter-(\d+)\.(png|json)$/;

// An <img> whose bytes come through the authenticated API.
export function artifactImage(id, name, onLeave) {
  const img = h('img', { alt: name });
  blobUrl(id, name).then((url) => { img.src = url; onLeave(() => URL.revokeObjectURL(url)); }).catch(() => { img.alt = `${name}: not loaded`; });
  return img;
}

// A section with a slider over iterations; show(iteration) fills it.
export function slider(title, iterations, show) {
  const box = h('div');
  const label = h('span');
  const input = h('input', { type: 'range', min: 0, max: iterations.length - 1, value: iterations.length - 1, 'aria-label': title });
  const go = () => { const it = iterations[input.value]; label.textContent = ` iteration ${it}`; box.replaceChildren(show(it)); };
  input.addEventListener('input', go);
  go();
  return [h('div', {}, input, label), box];
}

function groupView(id, iteration, byIter, onLeave) {
  const files = byIter.get(iteration);
  const table = h('div', {}, h('span', { class: 'muted' }, 'loading…'));
  if (files.json) {
    blobUrl(id, files.json).then(async (url) => {
      const g = await (await fetch(url)).json();
      URL.revokeObjectURL(url);
      const perChunk = g.members.some((m) => m.chunk_advantage); // config.chunk_rewards: one advantage per chunk
      table.replaceChildren(
        h('p', {}, `prompt: “${g.prompt}”, chunks ${JSON.stringify(g.chunks)}`,
          g.rewards_all_equal ? h('strong', { class: 'error' }, ' — all rewards equal: no learning signal') : ''),
        h('table', { class: g.rewards_all_equal ? 'flagged' : '' },
          h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, 'reward'), h('th', {}, 'advantage'),
            perChunk ? (g.chunks || []).map((_, c) => h('th', {}, `advantage chunk ${c}`)) : [],
            (g.chunks || []).map((_, c) => h('th', {}, `ratio chunk ${c}`)))),
          h('tbody', {}, g.members.map((m, j) => h('tr', {},
            h('td', {}, String(j)),
            // the reward's components (align and its parts) on hover
            h('td', { class: 'num', title: Object.entries(m.components || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(', ') }, fmt(m.reward)),
            h('td', { class: 'num' }, fmt(m.advantage)),
            (m.chunk_advantage || []).map((a) => h('td', { class: 'num', 'data-chunk-advantage': '' }, fmt(a))),
            m.chunk_ratio.map((r) => h('td', { class: 'num' }, fmt(r))))))));
    }).catch((e) => table.replaceChildren(h('p', { class: 'error' }, e.message)));
  } else table.replaceChildren();
  return h('div', { class: 'group' }, files.png ? artifactImage(id, files.png, onLeave) : '', table);
}

// Held-out and training-prompt align per caption template, the first evaluation against the
// latest: where a run gains, and how much of it carries over to prompts it never trains on.
// seriesOf(key): the {iteration, value} series its chart holds, if any; keys: every charted key.
function templateTable(seriesOf, keys) {
  const names = [...new Set(keys.map((k) => k.match(TEMPLATE_KEY)?.[1]).filter(Boolean))];
  const rank = (n) => (TEMPLATES.indexOf(n) + 1) || TEMPLATES.length + 1;
  names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  if (!names.length) return h('p', { class: 'muted' }, 'No evaluations by template yet.');
  const ends = (key) => {
    const s = seriesOf(key);
    return s?.value.length ? [0, s.value.length - 1].map((i) => [s.iteration[i], s.value[i]]) : null;
  };
  const cells = (key) => {
    const e = ends(key);
    if (!e) return [h('td'), h('td'), h('td')];
    const gain = e[1][1] - e[0][1];
    return [h('td', { class: 'num' }, fmt(e[0][1], 3)), h('td', { class: 'num' }, fmt(e[1][1], 3)),
      h('td', { class: 'num', 'data-gain': '' }, `${gain >= 0 ? '+' : ''}${fmt(gain, 2)}`)];
  };
  const span = (key) => { const e = ends(key); return e ? `iteration ${e[0][0]} → ${e[1][0]}` : ''; };
  return h('table', { 'data-template-table': '' },
    h('thead', {},
      h('tr', {}, h('th'), h('th', { colSpan: 3 }, `held-out prompts ${span('eval_align')}`),
        h('th', { colSpan: 3 }, `training prompts ${span('eval_train_align')}`)),
      h('tr', {}, h('th', {}, 'template'), ['first', 'latest', 'gain', 'first', 'latest', 'gain'].map((t) => h('th', {}, t)))),
    h('tbody', {},
      names.map((n) => h('tr', { 'data-template': n }, h('td', {}, n), cells(`eval_template.${n}`), cells(`eval_train_template.${n}`))),
      h('tr', { 'data-template': 'all' }, h('td', {}, h('strong', {}, 'all')), cells('eval_align'), cells('eval_train_align'))));
}

// The profile's relative-L1 curve per step, mean ± std, with the chosen chunks' boundaries.
async function drawProfile(box, id, onLeave) {
  const url = await blobUrl(id, 'profile.json');
  const p = await (await fetch(url)).json();
  URL.revokeObjectURL(url);
  const steps = p.l1rel_mean.map((_, i) => i);
  const bounds = p.chunks.slice(0, -1).map((_, c) => p.chunks.slice(0, c + 1).reduce((a, b) => a + b) - 0.5);
  const charts = h('div', { class: 'charts' });
  box.append(h('h2', {}, 'Temporal dynamics (profile)'),
    h('p', {}, `${p.prompts} prompts, ${p.rollouts} rollouts; chunks ${JSON.stringify(p.chunks)}`), charts);
  const chart = new Chart(charts, 'relative L1 per step', ['mean', 'mean - std', 'mean + std'],
    { x: 'step', sync: 'profile', marks: bounds });
  chart.box.dataset.marks = p.chunks.length - 1;
  chart.set('mean', { iteration: steps, value: p.l1rel_mean });
  chart.set('mean - std', { iteration: steps, value: p.l1rel_mean.map((m, i) => m - p.l1rel_std[i]) });
  chart.set('mean + std', { iteration: steps, value: p.l1rel_mean.map((m, i) => m + p.l1rel_std[i]) });
  onLeave(() => chart.destroy());
}

export async function experimentPage(root, { match }, onLeave) {
  const id = Number(match[1]);
  const [exp, metrics, logs, artifacts] = await Promise.all([
    api(`/experiments/${id}`),
    api(`/experiments/${id}/metrics?max_points=2000`),
    api(`/experiments/${id}/logs`),
    api(`/experiments/${id}/artifacts`),
  ]);

  const head = h('div');
  const act = (what) => async () => {
    try {
      Object.assign(exp, await api(`/experiments/${id}/${what}`, { method: 'POST' }));
      drawHead();
    } catch (e) { head.append(h('p', { class: 'error' }, e.message)); }
  };
  function drawHead() {
    const terminal = ['succeeded', 'failed', 'canceled'].includes(exp.status);
    head.replaceChildren(
      h('h1', {}, `#${exp.id} ${exp.name || ''} `, statusBadge(exp.status)),
      h('div', { class: 'toolbar' },
        h('span', {}, `${exp.kind}${exp.config?.method ? ` · ${exp.config.method}` : ''} · attempt ${exp.attempts}/${exp.max_attempts}`),
        progressBar(exp.progress),
        exp.error ? h('span', { class: 'error' }, exp.error) : '',
        h('button', { onclick: act('cancel'), disabled: terminal || exp.cancel_requested }, 'Cancel'),
        h('button', { onclick: act('retry'), disabled: !['failed', 'canceled'].includes(exp.status) }, 'Retry'),
        h('a', { href: `#/new?clone=${id}` }, 'Clone…'),
        h('a', { href: `#/compare?ids=${id}` }, 'Compare…')));
  }
  drawHead();

  const chartBox = h('div', { class: 'charts' });
  const galleryBox = h('div', { class: 'gallery', 'data-gallery': '' });
  const groupBox = h('div');
  const profileBox = h('div', { 'data-profile': '' });
  const templateBox = h('div', { 'data-templates': '' });
  const logBox = h('pre', { 'data-logs': '' });
  const artifactBody = h('tbody');
  // only a GRPO run evaluates as it trains
  const grpo = exp.kind === 'grpo';
  root.append(head, h('h2', {}, 'Metrics'), chartBox, profileBox,
    ...(grpo ? [h('h2', {}, 'Evaluation by caption template'), templateBox] : []),
    h('h2', {}, 'Eval samples'), galleryBox,
    h('h2', {}, 'Rollout group'), groupBox, h('h2', {}, 'Logs'), logBox,
    h('h2', {}, 'Artifacts'), h('table', {}, h('tbody', {}, artifactBody)),
    h('h2', {}, 'Config'), h('pre', {}, JSON.stringify(exp.config, null, 2)));

  const charts = CHARTS.map(([title, keys]) => new Chart(chartBox, title, keys));
  onLeave(() => charts.forEach((c) => c.destroy()));
  const chartOf = new Map(charts.flatMap((c) => c.keys.map((k) => [k, c])));
  const found = new Map(); // title -> chart
  // The chart of a key, a FOUND chart made or grown for it when it is one of theirs.
  function chartFor(key) {
    if (chartOf.has(key)) return chartOf.get(key);
    const f = FOUND.find(([, re]) => re.test(key));
    if (!f) return null;
    const [title, , label] = f;
    let chart = found.get(title);
    if (chart) chart.addKey(key, label(key));
    else {
      chart = new Chart(chartBox, title, [key], { labels: { [key]: label(key) } });
      found.set(title, chart);
      charts.push(chart);
    }
    chartOf.set(key, chart);
    return chart;
  }
  for (const key of Object.keys(metrics.series).sort(byNumber)) chartFor(key)?.set(key, metrics.series[key]);
  charts.forEach((c) => c.draw());
  // the template table reads the charts' own series
  const drawTemplates = () => templateBox.replaceChildren(templateTable((k) => chartOf.get(k)?.series[k], [...chartOf.keys()]));
  drawTemplates();
  root.dataset.chartsDrawn = 'yes';

  const arts = artifacts.items;
  let profileShown = false;
  function drawArtifacts() {
    if (!profileShown && arts.some((a) => a.name === 'profile.json')) {
      profileShown = true;
      drawProfile(profileBox, id, onLeave).catch((e) => profileBox.append(h('p', { class: 'error' }, e.message)));
    }
    const gallery = arts.map((a) => [Number(a.name.match(GALLERY)?.[1]), a.name]).filter(([it]) => !Number.isNaN(it)).sort((a, b) => a[0] - b[0]);
    const byName = new Map(gallery.map(([it, name]) => [it, name]));
    galleryBox.replaceChildren(...(gallery.length
      ? slider('gallery iteration', gallery.map(([it]) => it), (it) => artifactImage(id, byName.get(it), onLeave))
      : [h('p', { class: 'muted' }, 'No eval grids yet.')]));
    const groups = new Map();
    for (const a of arts) {
      const m = a.name.match(GROUP);
      if (m) groups.set(Number(m[1]), { ...groups.get(Number(m[1])), [m[2]]: a.name });
    }
    const its = [...groups.keys()].sort((a, b) => a - b);
    groupBox.replaceChildren(...(its.length
      ? slider('group iteration', its, (it) => groupView(id, it, groups, onLeave))
      : [h('p', { class: 'muted' }, 'No rollout groups yet.')]));
    artifactBody.replaceChildren(...arts.map((a) => h('tr', {},
      h('td', {}, h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); download(a.name); } }, a.name)),
      h('td', { class: 'num' }, `${a.size} B`), h('td', { class: 'muted' }, a.iteration != null ? `iteration ${a.iteration}` : ''))));
  }
  async function download(name) {
    const url = await blobUrl(id, name);
    h('a', { href: url, download: name.split('/').pop() }).click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  drawArtifacts();

  const logLine = (l) => `${l.ts} ${l.level.padEnd(5)} ${l.message}\n`;
  logBox.textContent = logs.items.map(logLine).join('') || 'No log lines.';

  onLeave(subscribe(`/experiments/${id}/events`, ({ type, data }) => {
    if (type === 'metrics') {
      for (const [key, v] of Object.entries(data.values)) chartFor(key)?.append(key, data.iteration, v);
      if (Object.keys(data.values).some((k) => k.startsWith('eval_'))) drawTemplates();
      exp.latest = { ...exp.latest, ...data.values };
    } else if (type === 'status') { Object.assign(exp, data); drawHead(); }
    else if (type === 'progress') { exp.progress = data; drawHead(); }
    else if (type === 'log') {
      if (!logBox.textContent.endsWith('\n')) logBox.textContent = '';
      logBox.textContent += logLine({ ...data, ts: data.ts });
    } else if (type === 'artifact') { arts.push(data); drawArtifacts(); }
  }, metrics.last_event_id));
}
