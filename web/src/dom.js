// h(tag, attrs, ...children): an element; attrs set properties, "on*" add listeners, "class"
// and "data-*" set attributes. Children may be strings, nodes, arrays, null or false.
export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class' || k.startsWith('data-') || k.startsWith('aria-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return e;
}

export const fmt = (v, digits = 4) =>
  v == null || Number.isNaN(v) ? '–' : Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(digits)).toString();

export function duration(seconds) {
  if (!(seconds >= 0)) return '';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export const statusBadge = (status) => h('span', { class: `status ${status}` }, status);

export function progressBar(progress) {
  if (!progress || !progress.total) return h('span', { class: 'muted' }, '–');
  const pct = Math.min(100, (100 * progress.iteration) / progress.total);
  const left = progress.seconds_per_iteration
    ? ` · ETA ${duration((progress.total - progress.iteration) * progress.seconds_per_iteration)}` : '';
  const bar = h('div');
  bar.style.width = `${pct}%`;
  return h('span', {}, h('span', { class: 'bar' }, bar), ` ${progress.iteration}/${progress.total}${left}`);
}

// A small SVG line of the values (the list's reward sparkline).
export function sparkline(values, width = 100, height = 24) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  if (values.length > 1) {
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const pts = values.map((v, i) =>
      `${((i / (values.length - 1)) * width).toFixed(1)},${(height - 2 - ((v - lo) / span) * (height - 4)).toFixed(1)}`);
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(line);
  }
  return svg;
}
