// Drivers: availability, engine circuit breakers and how many sandboxes each holds.

import { api } from './api.js';
import { badge, clear, h, toast } from './dom.js';

const ABOUT = {
  native: 'Linux namespaces, cgroups, seccomp and Landlock on this host.',
  docker: 'Containers through the Docker Engine API.',
  podman: 'Containers through the Podman API socket.',
};

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
    h('p.muted', ABOUT[d.name] ?? ''),
    d.reason ? h('p.reason', d.reason) : null,
    h('p.count', h('strong', String(d.sandboxes)), ` sandbox${d.sandboxes === 1 ? '' : 'es'}`),
    d.circuits.length
      ? h(
          'table.circuits',
          h('thead', h('tr', h('th', 'Endpoint'), h('th', 'Circuit'), h('th.num', 'Failures'))),
          h('tbody', d.circuits.map((c) => h('tr', h('td', h('code', c.endpoint)), h('td', badge(c.state)), h('td.num', String(c.failures))))),
        )
      : h('p.muted.small', d.name === 'native' ? 'In-process: no engine circuit.' : 'No calls to its engine yet.'),
  );
}
