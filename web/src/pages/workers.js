// Workers: name, backend, device, heartbeat age and the experiment each one runs.
import { api } from '../api.js';
import { h, duration } from '../dom.js';

export async function workersPage(root) {
  const { items } = await api('/workers');
  root.append(h('h1', {}, 'Workers'),
    items.length === 0 ? h('p', { class: 'muted' }, 'No worker has registered.') :
      h('table', { 'data-page': 'workers' },
        h('thead', {}, h('tr', {}, ['name', 'id', 'backend', 'device', 'memory', 'threads', 'heartbeat', 'experiment'].map((t) => h('th', {}, t)))),
        h('tbody', {}, items.map((w) => h('tr', {},
          h('td', {}, w.name), h('td', { class: 'muted' }, w.id), h('td', {}, w.backend), h('td', {}, w.device),
          h('td', { class: 'num' }, `${w.memory_mb} MB`), h('td', { class: 'num' }, String(w.threads)),
          h('td', {}, `${duration(w.heartbeat_age_s)} ago`),
          h('td', {}, w.experiment_id ? h('a', { href: `#/experiments/${w.experiment_id}` }, `#${w.experiment_id}`) : '–'))))));
}
