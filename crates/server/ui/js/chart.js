// A small live line chart in SVG: the last `points` readings, scaled to a fixed or running maximum.

import { h, svg } from './dom.js';

const W = 300;
const H = 90;

export function lineChart({ title, color = '#1f6feb', max = null, floor = 0, format = String, points = 60 }) {
  const values = [];
  const area = svg('path', { fill: color, 'fill-opacity': '0.12', stroke: 'none' });
  const line = svg('path', {
    fill: 'none',
    stroke: color,
    'stroke-width': '2',
    'vector-effect': 'non-scaling-stroke',
    'stroke-linejoin': 'round',
  });
  const grid = [0.25, 0.5, 0.75].map((f) =>
    svg('line', { x1: 0, x2: W, y1: H * f, y2: H * f, class: 'grid', 'vector-effect': 'non-scaling-stroke' }),
  );
  const plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'plot', role: 'img' }, ...grid, area, line);
  const now = h('span.chart-value', '–');
  const top = h('span.chart-max');
  const el = h('figure.chart', h('figcaption', h('span.chart-title', title), now), h('div.plot-wrap', plot, top));
  plot.setAttribute('aria-label', title);
  let fixedMax = max;

  function draw() {
    const peak = Math.max(...values, 0);
    const top_ = fixedMax ?? Math.max(peak * 1.25, floor, 1e-9);
    top.textContent = format(top_);
    if (values.length === 0) return;
    const step = W / (points - 1);
    const x0 = W - (values.length - 1) * step;
    const pts = values.map((v, i) => [x0 + i * step, H - Math.min(1, v / top_) * (H - 2) - 1]);
    const d = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
    line.setAttribute('d', d);
    area.setAttribute('d', `${d}L${W},${H}L${pts[0][0].toFixed(1)},${H}Z`);
  }

  return {
    el,
    push(v) {
      values.push(v);
      if (values.length > points) values.shift();
      now.textContent = format(v);
      draw();
    },
    setMax(m) {
      fixedMax = m;
      draw();
    },
    note(text) {
      now.textContent = text;
    },
  };
}
