// Line charts over the iteration axis (uPlot). A chart holds one or more named series, each
// {iteration: [...], value: [...]}; it aligns them on the union of their iterations and
// redraws at most once per animation frame, so live appends stay cheap.
import uPlot from 'uplot';
import { h, fmt } from './dom.js';

const COLORS = ['#2f6fdf', '#e0672b', '#2e9d57', '#9b4ddb', '#c62828', '#00838f', '#8d6e63'];
const seriesOf = (label, i) => ({ label, stroke: COLORS[i % COLORS.length], spanGaps: true, width: 1.5 });

function drawMarks(u, marks) {
  const { ctx, bbox } = u;
  ctx.save();
  ctx.strokeStyle = '#888';
  ctx.setLineDash([4, 4]);
  for (const m of marks) {
    const px = Math.round(u.valToPos(m, 'x', true));
    ctx.beginPath();
    ctx.moveTo(px, bbox.top);
    ctx.lineTo(px, bbox.top + bbox.height);
    ctx.stroke();
  }
  ctx.restore();
}

export class Chart {
  // labels: {key: legend label}; sync: charts with the same key share the cursor; x: the x
  // axis' name; marks: x positions drawn as vertical lines (the profile's chunk boundaries).
  constructor(parent, title, keys, { labels = {}, sync = 'iteration', height = 200, x = 'iteration', marks = [] } = {}) {
    this.keys = [...keys];
    this.series = Object.fromEntries(keys.map((k) => [k, { iteration: [], value: [] }]));
    this.box = h('div', { class: 'chart', 'data-chart': title }, h('h3', {}, title));
    parent.append(this.box);
    const width = Math.max(300, this.box.clientWidth - 14);
    this.plot = new uPlot({
      width,
      height,
      cursor: { sync: { key: sync } },
      scales: { x: { time: false } },
      axes: [{}, { size: 60, values: (u, ticks) => ticks.map((v) => fmt(v, 3)) }],
      series: [{ label: x }, ...keys.map((k, i) => seriesOf(labels[k] || k, i))],
      hooks: { draw: [(u) => drawMarks(u, marks)] },
    }, [[], ...keys.map(() => [])], this.box);
    this.frame = 0;
  }

  // A series added after the chart was made (a key first seen in a live event).
  addKey(key, label = key) {
    this.series[key] = { iteration: [], value: [] };
    this.plot.addSeries(seriesOf(label, this.keys.length));
    this.keys.push(key);
  }

  set(key, s) {
    this.series[key] = { iteration: [...s.iteration], value: [...s.value] };
    this.schedule();
  }

  append(key, iteration, value) {
    const s = this.series[key];
    const n = s.iteration.length;
    if (n && s.iteration[n - 1] === iteration) s.value[n - 1] = value;
    else { s.iteration.push(iteration); s.value.push(value); }
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  draw() {
    const all = this.keys.map((k) => this.series[k]);
    let data;
    if (all.length === 1) data = [all[0].iteration, all[0].value];
    else {
      const xs = [...new Set(all.flatMap((s) => s.iteration))].sort((a, b) => a - b);
      const at = new Map(xs.map((x, i) => [x, i]));
      data = [xs, ...all.map((s) => {
        const ys = new Array(xs.length).fill(null);
        s.iteration.forEach((x, i) => { ys[at.get(x)] = s.value[i]; });
        return ys;
      })];
    }
    this.plot.setData(data);
    this.box.dataset.points = data[0].length;
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.plot.destroy();
  }
}
