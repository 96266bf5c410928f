// Drivers: what each registered driver is, its availability and backend, engine circuit breakers
// and how many sandboxes each holds. Everything shown comes from /api/drivers: no driver is named
// here, so a newly registered one appears as it is.

import { api } from './api.js';
import { badge, clear, h, toast } from './dom.js';

export async function driversPage(main, _params, scope) {
  const grid = h('div.driver-grid');
  const refresh = h('button.ghost', { type: 'button' }, 'Refresh');
  main.append(h('div.page-head', h('h1', 'Drivers'), refresh), grid);
  const load = async () => {
    refresh.disabled = true;
    try {
      const drivers = await api('/api/drivers');
      clear(grid, drivers.map(card));
    } catch (e) {
      toast(e);
    } finally {
      refresh.disabled = false;
    }
  };
  refresh.addEventListener('click', load);
  scope.every(15000, load);
  await load();
}

function card(d) {
  const healthy = d.available && d.circuits.every((c) => c.state === 'closed');
  return h(
    'section.card.driver',
    { dataset: { driver: d.name } },
    h('div.card-head', h('h2', d.name), badge(d.available ? (healthy ? 'available' : 'degraded') : 'unavailable')),
    d.description ? h('p.description.muted', withFlags(d.description)) : null,
    d.summary ? h('p.summary', { title: 'What the driver reports about its backend' }, d.summary) : null,
    d.reason ? h('p.reason', d.reason) : null,
    h('p.count', h('strong', String(d.sandboxes)), ` sandbox${d.sandboxes === 1 ? '' : 'es'}`),
    d.circuits.length
      ? h(
          'table.circuits',
          h('thead', h('tr', h('th', 'Endpoint'), h('th', 'Circuit'), h('th.num', 'Failures'))),
          h('tbody', d.circuits.map((c) => h('tr', h('td', h('code', c.endpoint)), h('td', badge(c.state)), h('td.num', String(c.failures))))),
        )
      : h('p.muted.small', 'No engine circuits.'),
  );
}

/** Text with its command-line flags (`--runtime`) as code, so a narrow card does not break them. */
function withFlags(text) {
  return text.split(/(--[a-z][a-z0-9-]*)/i).map((part, i) => (i % 2 ? h('code', part) : part));
}
