// Experiments list: filters by status and kind, progress with ETA, latest reward and a reward
// sparkline; kept live by the all-experiments event stream.
import { api, subscribe } from '../api.js';
import { h, fmt, statusBadge, progressBar, sparkline } from '../dom.js';

const STATUSES = ['', 'queued', 'running', 'succeeded', 'failed', 'canceled'];
const KINDS = ['', 'grpo', 'eval', 'profile', 'pretrain'];

export async function listPage(root, { query }, onLeave) {
  const filter = { status: query.get('status') || '', kind: query.get('kind') || '' };
  const select = (name, options) => h('select', {
    'aria-label': name,
    onchange: (ev) => {
      filter[name] = ev.target.value;
      const q = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
      location.hash = `#/experiments${q.size ? `?${q}` : ''}`;
    },
  }, options.map((o) => h('option', { value: o, selected: o === filter[name] }, o || `any ${name}`)));
  const tbody = h('tbody');
  root.append(
    h('h1', {}, 'Experiments'),
    h('div', { class: 'toolbar' }, select('status', STATUSES), select('kind', KINDS), h('a', { href: '#/new' }, 'New experiment')),
    h('table', { 'data-page': 'list' },
      h('thead', {}, h('tr', {}, ['id', 'name', 'kind', 'method', 'status', 'progress', 'reward', 'reward history'].map((t) => h('th', {}, t)))),
      tbody));

  const rows = new Map(); // id -> {exp, spark: [values], tr}
  const render = (row) => {
    const e = row.exp;
    const tr = h('tr', { 'data-id': e.id },
      h('td', {}, h('a', { href: `#/experiments/${e.id}` }, String(e.id))),
      h('td', {}, e.name || ''),
      h('td', {}, e.kind),
      h('td', {}, e.config?.method ?? e.method ?? ''),
      h('td', {}, statusBadge(e.status), e.cancel_requested && e.status === 'running' ? ' (canceling)' : ''),
      h('td', {}, progressBar(e.progress)),
      h('td', { class: 'num', 'data-reward': '' }, fmt(e.latest?.reward_mean)),
      h('td', {}, sparkline(row.spark)));
    if (row.tr) row.tr.replaceWith(tr);
    row.tr = tr;
    return tr;
  };
  const matches = (e) => (!filter.status || e.status === filter.status) && (!filter.kind || e.kind === filter.kind);

  async function load() {
    const q = new URLSearchParams(Object.entries({ ...filter, limit: 100 }).filter(([, v]) => v));
    const { items } = await api(`/experiments?${q}`);
    const fresh = await Promise.all(items.map(async (exp) => {
      const old = rows.get(exp.id);
      if (old) return { exp: { ...exp, method: old.exp.method }, spark: old.spark };
      const [full, m] = await Promise.all([
        api(`/experiments/${exp.id}`),
        api(`/experiments/${exp.id}/metrics?keys=reward_mean&max_points=50`),
      ]);
      return { exp: { ...exp, method: full.config?.method }, spark: m.series.reward_mean?.value || [] };
    }));
    rows.clear();
    tbody.replaceChildren(...fresh.map((row) => { rows.set(row.exp.id, row); return render(row); }));
    if (!fresh.length) tbody.append(h('tr', {}, h('td', { colSpan: 8, class: 'muted' }, 'No experiments.')));
  }

  let reloading = null;
  const reload = () => { reloading ??= setTimeout(() => { reloading = null; load().catch(() => {}); }, 200); };
  onLeave(() => clearTimeout(reloading));
  onLeave(subscribe('/events', ({ type, data }) => {
    const row = rows.get(data.experiment_id);
    if (!row) { if (type === 'status') reload(); return; }
    const e = row.exp;
    if (type === 'status') {
      Object.assign(e, { status: data.status, attempts: data.attempts });
      if (!matches(e)) { reload(); return; }
    } else if (type === 'progress') e.progress = data;
    else if (type === 'metrics') {
      if (data.values.reward_mean === undefined) return;
      e.latest = { ...e.latest, reward_mean: data.values.reward_mean };
      row.spark = [...row.spark.slice(-49), data.values.reward_mean];
    } else return;
    render(row);
  }));
  await load();
}
