// One sandbox: its facts, a terminal, live CPU and memory, files, exec history.

import { api, enc, onStatus } from './api.js';
import { lineChart } from './chart.js';
import { badge, clear, confirmButton, fmtAge, fmtBytes, h, toast } from './dom.js';
import { renderPatch } from './diff.js';
import { execHistory } from './execs.js';
import { fileBrowser } from './files.js';
import { CpuMeter } from './sandboxes.js';
import { openTerminal } from './terminal.js';

function limits(spec) {
  const r = spec?.resources ?? {};
  const out = [];
  if (r.millicpus) out.push(`${r.millicpus / 1000} CPU`);
  if (r.memory_bytes) out.push(`${fmtBytes(r.memory_bytes)} memory`);
  if (r.pids) out.push(`${r.pids} processes`);
  if (r.disk_bytes) out.push(`${fmtBytes(r.disk_bytes)} disk`);
  return out.length ? out.join(', ') : 'none';
}

function facts(info) {
  const spec = info.spec ?? {};
  const rows = [
    ['ID', info.id],
    ['Driver', info.driver + (spec.runtime ? ` (${spec.runtime})` : '')],
    [spec.image ? 'Image' : 'Root', spec.image ?? spec.rootfs ?? 'host /, read-only'],
    ['Network', spec.network ?? 'none'],
    ['Limits', limits(spec)],
    ['Workdir', spec.workdir],
    ['Age', fmtAge(info.created_at)],
  ];
  const labels = Object.entries(spec.labels ?? {});
  if (labels.length) rows.push(['Labels', labels.map(([k, v]) => `${k}=${v}`).join(', ')]);
  return h('dl.facts', rows.map(([k, v]) => [h('dt', k), h('dd', v ?? '–')]));
}

export async function sandboxPage(main, [id], scope) {
  let info = await api(`/api/sandboxes/${enc(id)}`);
  id = info.id;
  const head = h('div.page-head');
  const factsSlot = h('div');
  const body = h('div.sandbox-grid');
  main.append(h('a.back', { href: '#/sandboxes' }, '← Sandboxes'), head, body);

  const renderHead = () => {
    const running = info.status === 'running';
    const action = async (what) => {
      try {
        info = await api(`/api/sandboxes/${enc(id)}/${what}`, { method: 'POST' });
        render();
      } catch (e) {
        toast(e);
      }
    };
    clear(
      head,
      h('h1', info.name, ' ', badge(info.status)),
      h(
        'div.tools',
        running
          ? h('button', { type: 'button', onclick: () => action('stop') }, 'Stop')
          : info.status === 'stopped'
            ? h('button', { type: 'button', onclick: () => action('start') }, 'Start')
            : null,
        confirmButton('Delete', 'Delete?', async () => {
          try {
            await api(`/api/sandboxes/${enc(id)}`, { method: 'DELETE' });
            location.hash = '#/sandboxes';
          } catch (e) {
            toast(e);
          }
        }),
      ),
    );
    clear(factsSlot, facts(info));
  };

  let inner = null;
  function render() {
    renderHead();
    inner?.close();
    inner = scope.child();
    clear(body);
    const running = info.status === 'running';

    // Terminal
    const termState = h('span.term-state.muted');
    const termEl = h('div.term');
    const termCard = h('section.card.term-card', h('div.card-head', h('h2', 'Terminal'), termState), termEl);
    body.append(termCard);
    if (running) {
      const t = openTerminal(termEl, id, inner, (s) => (termState.textContent = s));
      if (t.available) {
        termCard.querySelector('.card-head').append(h('div.tools', h('button.small.ghost', { type: 'button', onclick: () => t.restart() }, 'New shell')));
      }
    } else {
      termEl.classList.add('term-off');
      termEl.textContent = `The sandbox is ${info.status}${info.status === 'stopped' ? ': start it to open a terminal.' : '.'}`;
    }

    // Stats and facts
    const memMax = info.spec?.resources?.memory_bytes ?? null;
    const cpuMax = info.spec?.resources?.millicpus ? info.spec.resources.millicpus / 10 : null;
    const pct = (v) => `${v.toFixed(v < 10 ? 1 : 0)} %`;
    // Scaled to the limits when there are some, else to one CPU and 64 MiB at least.
    const cpu = lineChart({ title: cpuMax ? `CPU (limit ${pct(cpuMax)})` : 'CPU', color: '#1f6feb', max: cpuMax, floor: 100, format: pct });
    const mem = lineChart({ title: memMax ? `Memory (limit ${fmtBytes(memMax)})` : 'Memory', color: '#8250df', max: memMax, floor: 64 << 20, format: fmtBytes });
    const pids = h('span', '–');
    body.append(h('section.card.stats-card', h('div.card-head', h('h2', 'Usage'), h('span.muted', 'processes ', pids)), cpu.el, mem.el, factsSlot));
    if (running) {
      const meter = new CpuMeter();
      const poll = async () => {
        try {
          const s = await api(`/api/sandboxes/${enc(id)}/stats`);
          const pct = meter.push(s);
          if (pct !== null) cpu.push(pct);
          mem.push(s.memory_bytes);
          pids.textContent = String(s.pids);
        } catch {
          // stopped or gone: the status change re-renders
        }
      };
      poll();
      const soon = setTimeout(poll, 700);
      inner.add(() => clearTimeout(soon));
      inner.every(2000, poll);
    } else {
      cpu.note('–');
      mem.note('–');
    }

    // Files and execs
    if (running) {
      const files = fileBrowser(id, info.spec?.workdir);
      body.append(files.el);
      files.load();
    } else {
      body.append(h('section.card.files-card', h('div.card-head', h('h2', 'Files')), h('p.note', 'Files can be browsed while the sandbox runs.')));
    }
    const execs = execHistory(id, inner);
    body.append(execs.el);
    execs.load();
    const changes = running ? changesCard(id, info.spec?.workdir ?? '/workspace') : null;
    if (changes) body.append(changes.el);
    let pending = null;
    inner.add(
      onStatus((change) => {
        if (change.kind === 'exec' && change.sandbox_id === id) {
          clearTimeout(pending);
          pending = setTimeout(() => {
            execs.load();
            if (change.status !== 'running') changes?.load();
          }, 200);
        }
      }),
    );
    inner.add(() => clearTimeout(pending));
  }

  scope.add(() => inner?.close());
  scope.add(
    onStatus(async (change) => {
      if (change.kind !== 'sandbox' || change.id !== id || change.status === info.status) return;
      if (change.status === 'destroyed') {
        clear(body, h('section.card', h('p', 'This sandbox was destroyed. '), h('a', { href: '#/sandboxes' }, 'Back to the sandboxes')));
        info.status = 'destroyed';
        renderHead();
        inner?.close();
        return;
      }
      try {
        info = await api(`/api/sandboxes/${enc(id)}`);
        render();
      } catch (e) {
        toast(e);
      }
    }),
  );
  scope.every(1000, () => {
    const age = factsSlot.querySelector('dd:nth-of-type(7)');
    if (age) age.textContent = fmtAge(info.created_at);
  });
  render();
}

/**
 * What changed in the workdir since the baseline commit of the code loaded at create (a git
 * repository in the workdir): shown only when there is one, refreshed as execs end.
 */
function changesCard(id, workdir) {
  const slot = h('div', h('p.note', 'Loading…'));
  const refresh = h('button.small.ghost', { type: 'button' }, 'Refresh');
  const el = h('section.card.changes-card', { hidden: true }, h('div.card-head', h('h2', 'Changes since the baseline'), h('div.tools', refresh)), slot);
  let known = false;
  async function load() {
    if (!known) {
      try {
        const entries = await api(`/api/sandboxes/${enc(id)}/dir?path=${enc(workdir)}`);
        known = entries.some((e) => e.name === '.git');
      } catch {
        return;
      }
      if (!known) return;
      el.hidden = false;
    }
    try {
      clear(slot, renderPatch(await api(`/api/sandboxes/${enc(id)}/diff`, { as: 'text' })));
    } catch (e) {
      clear(slot, h('p.form-error', e.message));
    }
  }
  refresh.addEventListener('click', load);
  load();
  return { el, load };
}
