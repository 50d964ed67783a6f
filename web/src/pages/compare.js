// Compare: pick experiments; overlaid reward_mean and eval_align curves, final eval_align with
// each run's gain over its base model and the gain relative to the first picked one's, runs that
// differ only in the seed as one method (mean and spread over seeds), the final figures per
// caption template, their eval grids side by side at one iteration (the held-out seeds are the
// same in every run), and each one's config diff against the first.
import { api } from '../api.js';
import { h, fmt } from '../dom.js';
import { Chart } from '../charts.js';
import { GALLERY, TEMPLATES, artifactImage, slider } from './experiment.js';

const last = (s) => (s && s.value.length ? s.value[s.value.length - 1] : null);

export async function comparePage(root, { query }, onLeave) {
  const ids = (query.get('ids') || '').split(',').map(Number).filter((n) => n > 0);
  const { items } = await api('/experiments?limit=200');
  const picked = new Set(ids);
  const pick = (id) => (ev) => {
    const next = ev.target.checked ? [...ids, id] : ids.filter((x) => x !== id);
    location.hash = `#/compare?ids=${next.join(',')}`;
  };
  root.append(h('h1', {}, 'Compare'),
    h('details', { open: ids.length < 2 }, h('summary', {}, 'Pick experiments (the first picked is the baseline)'),
      h('div', { 'data-picker': '' }, items.map((e) => h('label', { style: 'display:block' },
        h('input', { type: 'checkbox', checked: picked.has(e.id), onchange: pick(e.id) }),
        ` #${e.id} ${e.name || ''} (${e.kind}, ${e.status})`)))));
  if (ids.length === 0) return;

  const runs = await Promise.all(ids.map(async (id) => {
    const [exp, m, a] = await Promise.all([api(`/experiments/${id}`),
      api(`/experiments/${id}/metrics?keys=${['reward_mean', 'eval_align', ...TEMPLATES.map((t) => `eval_template.${t}`)].join(',')}&max_points=2000`), api(`/experiments/${id}/artifacts`)]);
    const grids = new Map(a.items.map((x) => [Number(x.name.match(GALLERY)?.[1]), x.name]));
    grids.delete(NaN);
    return { id, exp, series: m.series, grids };
  }));
  const label = (r) => `#${r.id} ${r.exp.name || r.exp.config?.method || ''}`.trim();
  const chartBox = h('div', { class: 'charts', 'data-page': 'compare' });
  root.append(chartBox);
  for (const [title, key] of [['reward (mean)', 'reward_mean'], ['eval align (held-out ODE)', 'eval_align']]) {
    const keys = runs.map((r) => String(r.id));
    const chart = new Chart(chartBox, title, keys, { labels: Object.fromEntries(runs.map((r) => [String(r.id), label(r)])), sync: 'compare' });
    runs.forEach((r) => r.series[key] && chart.set(String(r.id), r.series[key]));
    chart.draw();
    onLeave(() => chart.destroy());
  }

  // algorithm.md section 7: each run's gain over the base model (its own evaluation at iteration
  // 0), and the paper's relative gain (method - base) / (baseline - base), the first picked run
  // being the baseline (step-level GRPO in the paper's table)
  const baseOf = (s) => (s && s.iteration[0] === 0 ? s.value[0] : null);
  const gainOf = (r) => { const v = last(r.series.eval_align), b = baseOf(r.series.eval_align); return v == null || b == null ? null : v - b; };
  const refGain = gainOf(runs[0]);
  const signed = (x) => (x == null ? '–' : `${x >= 0 ? '+' : ''}${fmt(x)}`);
  root.append(h('h2', {}, 'Final eval align'),
    h('table', { 'data-final': '' },
      h('thead', {}, h('tr', {}, ['experiment', 'method', 'status', 'base (iteration 0)', 'final eval align', 'gain', 'relative gain'].map((t) => h('th', {}, t)))),
      h('tbody', {}, runs.map((r) => {
        const gain = gainOf(r);
        return h('tr', {}, h('td', {}, h('a', { href: `#/experiments/${r.id}` }, label(r))),
          h('td', {}, r.exp.config?.method || r.exp.kind), h('td', {}, r.exp.status),
          h('td', { class: 'num' }, fmt(baseOf(r.series.eval_align))),
          h('td', { class: 'num' }, fmt(last(r.series.eval_align))),
          h('td', { class: 'num', 'data-gain': '' }, signed(gain)),
          h('td', { class: 'num', 'data-relative-gain': '' }, gain == null || !refGain ? '–' : (gain / refGain).toFixed(2)));
      }))));

  // The paper's table: runs whose configs differ only in their seed are one method, reported as
  // the mean and spread over its seeds, each method's mean gain relative to the first one's.
  const withoutSeed = (c) => JSON.stringify(Object.keys(c || {}).filter((k) => k !== 'seed').sort().map((k) => [k, c[k]]));
  const methods = [];
  for (const r of runs) {
    const key = withoutSeed(r.exp.config);
    const m = methods.find((x) => x.key === key);
    if (m) m.runs.push(r); else methods.push({ key, runs: [r] });
  }
  if (methods.some((m) => m.runs.length > 1)) {
    const meanSd = (xs) => {
      const n = xs.length, mean = xs.reduce((a, b) => a + b, 0) / n;
      return [n ? mean : null, n > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : null];
    };
    const known = (xs) => xs.filter((x) => x != null);
    const rows = methods.map((m) => ({ m, final: meanSd(known(m.runs.map((r) => last(r.series.eval_align)))), gain: meanSd(known(m.runs.map(gainOf))) }));
    const ref = rows[0].gain[0];
    root.append(h('h2', {}, 'Over seeds (runs whose configs differ only in the seed)'),
      h('table', { 'data-over-seeds': '' },
        h('thead', {}, h('tr', {}, ['method', 'runs', 'seeds', 'mean final eval align', 'sd', 'mean gain', 'relative gain'].map((t) => h('th', {}, t)))),
        h('tbody', {}, rows.map(({ m, final, gain }) => h('tr', {},
          h('td', {}, label(m.runs[0])), h('td', { class: 'num' }, String(m.runs.length)),
          h('td', {}, m.runs.map((r) => r.exp.config?.seed ?? 'default').join(', ')),
          h('td', { class: 'num' }, fmt(final[0])), h('td', { class: 'num' }, fmt(final[1])),
          h('td', { class: 'num' }, signed(gain[0])),
          h('td', { class: 'num', 'data-relative-gain': '' }, gain[0] == null || !ref ? '–' : (gain[0] / ref).toFixed(2)))))));
  }

  // the same per caption template: which scenes each method moves (held out, ODE)
  const present = TEMPLATES.filter((t) => runs.some((r) => r.series[`eval_template.${t}`]));
  if (present.length) {
    const cell = (r, key) => {
      const v = last(r.series[key]), b = baseOf(r.series[key]);
      return h('td', { class: 'num', 'data-template-cell': '' }, v == null ? '–' : `${fmt(v, 3)} (${b == null ? '–' : signed(Number((v - b).toPrecision(3)))})`);
    };
    root.append(h('h2', {}, 'Final eval align by caption template (gain over iteration 0)'),
      h('table', { 'data-final-templates': '' },
        h('thead', {}, h('tr', {}, h('th', {}, 'experiment'), present.map((t) => h('th', {}, t)), h('th', {}, 'all'))),
        h('tbody', {}, runs.map((r) => h('tr', {}, h('td', {}, label(r)),
          present.map((t) => cell(r, `eval_template.${t}`)), cell(r, 'eval_align'))))));
  }

  const its = [...new Set(runs.flatMap((r) => [...r.grids.keys()]))].sort((a, b) => a - b);
  root.append(h('h2', {}, 'Eval samples'), h('div', { class: 'gallery', 'data-compare-gallery': '' },
    its.length ? slider('gallery iteration', its, (it) => h('div', { class: 'side-by-side' }, runs.map((r) => h('figure', {},
      h('figcaption', {}, label(r)),
      r.grids.has(it) ? artifactImage(r.id, r.grids.get(it), onLeave) : h('p', { class: 'muted' }, 'no grid at this iteration')))))
      : h('p', { class: 'muted' }, 'No eval grids yet.')));

  const diffs = await Promise.all(runs.slice(1).map((r) => api(`/experiments/${ids[0]}/diff/${r.id}`)));
  for (const d of diffs) {
    const changed = Object.entries(d.changed);
    root.append(h('h2', {}, `Config: #${d.a} → #${d.b}`),
      changed.length === 0 ? h('p', { class: 'muted' }, 'Same config.') :
        h('table', { 'data-diff': '' }, h('thead', {}, h('tr', {}, h('th', {}, 'field'), h('th', {}, `#${d.a}`), h('th', {}, `#${d.b}`))),
          h('tbody', {}, changed.map(([k, [a, b]]) => h('tr', {}, h('td', {}, k), h('td', {}, JSON.stringify(a)), h('td', {}, JSON.stringify(b)))))));
  }
}
