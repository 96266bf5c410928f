// Sandboxes: the list (live status, driver, age, CPU, memory) and the form that makes one.

import { api, enc, onStatus } from './api.js';
import { badge, clear, confirmButton, fmtAge, fmtBytes, h, toast } from './dom.js';
import { driverSelect, field, formBody, showFormError } from './form.js';

/** CPU % from two readings of cpu_usec. */
export class CpuMeter {
  constructor() {
    this.last = null;
  }
  /** The share of one CPU used since the last reading, in %, or null on the first. */
  push(stats) {
    const now = performance.now();
    const prev = this.last;
    this.last = { usec: stats.cpu_usec, at: now };
    if (!prev || now <= prev.at || stats.cpu_usec < prev.usec) return null;
    return ((stats.cpu_usec - prev.usec) / ((now - prev.at) * 1000)) * 100;
  }
}

export async function sandboxesPage(main, _params, scope) {
  const list = h('tbody');
  const empty = h('p.empty-note', { hidden: true }, 'No sandboxes yet. Make one with “New sandbox”.');
  const formSlot = h('div');
  const newButton = h('button.primary', { type: 'button', id: 'new-sandbox' }, 'New sandbox');
  newButton.addEventListener('click', () => {
    if (formSlot.firstChild) {
      clear(formSlot);
      newButton.textContent = 'New sandbox';
    } else {
      formSlot.append(createForm(() => {
        clear(formSlot);
        newButton.textContent = 'New sandbox';
      }));
      newButton.textContent = 'Close form';
      formSlot.querySelector('input')?.focus();
    }
  });
  main.append(
    h('div.page-head', h('h1', 'Sandboxes'), newButton),
    formSlot,
    h(
      'section.card.flush',
      h(
        'table.list.sandboxes',
        h('thead', h('tr', ['Name', 'Status', 'Driver', 'Age', 'CPU', 'Memory', ''].map((t, i) => h('th', { class: i >= 3 && i <= 5 ? 'num' : '' }, t)))),
        list,
      ),
      empty,
    ),
  );

  const rows = new Map(); // id -> {tr, info, cells, meter}
  async function refresh() {
    let all;
    try {
      all = await api('/api/sandboxes');
    } catch (e) {
      toast(e);
      return;
    }
    const seen = new Set();
    for (const info of all.slice().reverse()) {
      seen.add(info.id);
      let row = rows.get(info.id);
      if (!row) {
        row = makeRow(info, refresh);
        rows.set(info.id, row);
      }
      row.info = info;
      updateRow(row);
      list.append(row.tr); // newest first
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    empty.hidden = rows.size > 0;
  }

  async function poll() {
    const running = [...rows.values()].filter((r) => r.info.status === 'running').slice(0, 50);
    await Promise.all(
      running.map(async (row) => {
        try {
          const stats = await api(`/api/sandboxes/${enc(row.info.id)}/stats`);
          const cpu = row.meter.push(stats);
          if (cpu !== null) row.cells.cpu.textContent = `${cpu.toFixed(cpu < 10 ? 1 : 0)} %`;
          row.cells.mem.textContent = fmtBytes(stats.memory_bytes);
        } catch {
          // gone or stopped meanwhile: the next refresh shows it
        }
      }),
    );
    for (const row of rows.values()) row.cells.age.textContent = fmtAge(row.info.created_at);
  }

  let pending = null;
  scope.add(
    onStatus((change) => {
      if (change.kind !== 'sandbox') return;
      const row = rows.get(change.id);
      if (row && change.status !== 'destroyed') {
        row.info.status = change.status;
        updateRow(row);
      }
      clearTimeout(pending);
      pending = setTimeout(refresh, 150);
    }),
  );
  scope.add(() => clearTimeout(pending));
  await refresh();
  poll();
  const soon = setTimeout(poll, 1000);
  scope.add(() => clearTimeout(soon));
  scope.every(3000, poll);
}

function makeRow(info, refresh) {
  const cells = {
    name: h('td', { 'data-label': 'Name' }),
    status: h('td', { 'data-label': 'Status' }),
    driver: h('td', { 'data-label': 'Driver' }),
    age: h('td.num', { 'data-label': 'Age' }),
    cpu: h('td.num', { 'data-label': 'CPU' }, '–'),
    mem: h('td.num', { 'data-label': 'Memory' }, '–'),
    actions: h('td.actions'),
  };
  const tr = h('tr', { dataset: { id: info.id } }, Object.values(cells));
  cells.actions.append(
    confirmButton('Delete', 'Delete?', async () => {
      try {
        await api(`/api/sandboxes/${enc(info.id)}`, { method: 'DELETE' });
        toast(`Deleted ${info.name}`, 'info');
        refresh();
      } catch (e) {
        toast(e);
      }
    }),
  );
  return { tr, cells, info, meter: new CpuMeter() };
}

function updateRow(row) {
  const { info, cells } = row;
  clear(
    cells.name,
    h('a.name', { href: `#/sandboxes/${enc(info.id)}` }, info.name),
    h('div.sub', info.id, info.spec?.image ? ` · ${info.spec.image}` : ''),
  );
  clear(cells.status, badge(info.status));
  cells.driver.textContent = info.driver;
  cells.age.textContent = fmtAge(info.created_at);
  if (info.status !== 'running') {
    cells.cpu.textContent = '–';
    cells.mem.textContent = '–';
  }
}

function createForm(done) {
  const driver = driverSelect('f-driver');
  const image = field('image', 'Image', { placeholder: 'the driver’s default' });
  const rootfs = field('rootfs', 'Root filesystem', { placeholder: 'host /, read-only' });
  const showFor = () => {
    // Until the drivers are known ('' is the daemon's default), neither.
    const container = driver.value !== 'native';
    image.hidden = !container || driver.value === '';
    rootfs.hidden = container;
  };
  driver.addEventListener('change', showFor);
  const submit = h('button.primary', { type: 'submit' }, 'Create sandbox');
  const error = h('p.form-error', { hidden: true });
  const form = h(
    'form.card.create-form',
    {
      id: 'create-sandbox',
      onsubmit: async (e) => {
        e.preventDefault();
        const body = formBody(form, {
          lists: ['env', 'volumes', 'labels'],
          keep: (k) => !(k === 'image' && image.hidden) && !(k === 'rootfs' && rootfs.hidden),
        });
        submit.disabled = true;
        submit.textContent = 'Creating…';
        try {
          const info = await api('/api/sandboxes', { method: 'POST', body });
          done();
          location.hash = `#/sandboxes/${enc(info.id)}`;
        } catch (err) {
          showFormError(form, error, err);
        } finally {
          submit.disabled = false;
          submit.textContent = 'Create sandbox';
        }
      },
    },
    h('h2', 'New sandbox'),
    h(
      'div.grid',
      field('name', 'Name', { placeholder: 'optional, unique' }),
      h('label.field', h('span', 'Driver'), driver),
      image,
      rootfs,
      h('label.field', { title: 'none: loopback only; full: the internet' }, h('span', 'Network'), h('select', { name: 'network' }, h('option', { value: 'none' }, 'none'), h('option', { value: 'full' }, 'full'))),
      field('code', 'Code', { placeholder: 'none', hint: 'empty, a git URL or github:OWNER/REPO' }),
      field('memory', 'Memory', { placeholder: 'e.g. 512m' }),
      field('cpus', 'CPUs', { placeholder: 'e.g. 1.5' }),
      field('pids', 'Processes', { placeholder: 'e.g. 256' }),
      field('disk', 'Disk', { placeholder: 'e.g. 1g' }),
      field('ttl', 'Time to live', { placeholder: 'e.g. 30m' }),
    ),
    h(
      'details.more',
      h('summary', 'More options'),
      h(
        'div.grid',
        field('idle_timeout', 'Idle timeout', { placeholder: 'e.g. 10m' }),
        field('workdir', 'Working directory', { placeholder: '/workspace' }),
        field('user', 'User', { placeholder: 'name, uid or uid:gid' }),
        field('env', 'Environment', { textarea: true, placeholder: 'KEY=value, one per line' }),
        field('volumes', 'Volumes', { textarea: true, placeholder: '/host/path:/path[:ro], one per line' }),
        field('labels', 'Labels', { textarea: true, placeholder: 'key=value, one per line' }),
      ),
    ),
    error,
    h('div.form-actions', submit, h('button.ghost', { type: 'button', onclick: done }, 'Cancel')),
  );
  showFor();
  return form;
}
