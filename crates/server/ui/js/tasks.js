// Coding-agent tasks: the form, the list, and a task's page with its streaming log and patch.

import { api, enc, onStatus } from './api.js';
import { badge, clear, fmtAge, fmtDuration, h, toast } from './dom.js';
import { renderPatch } from './diff.js';
import { driverSelect, field, formBody, showFormError } from './form.js';

const AGENTS = ['claude-code', 'codex', 'gemini', 'cursor', 'opencode', 'aider', 'command:'];

function duration(t) {
  return t.status === 'running' ? fmtDuration(Date.now() - t.started_at * 1000) : fmtDuration(t.duration_ms);
}

function patchStats(p) {
  if (!p || !p.files) return h('span.muted', 'no changes');
  return h('span.patch-stats', `${p.files} file${p.files === 1 ? '' : 's'} `, h('span.add-n', `+${p.insertions}`), ' ', h('span.del-n', `−${p.deletions}`));
}

function title(t) {
  return t.name || (t.prompt ? t.prompt.split('\n')[0].slice(0, 80) : '') || t.agent;
}

export async function tasksPage(main, _params, scope) {
  const list = h('tbody');
  const empty = h('p.empty-note', { hidden: true }, 'No tasks yet.');
  main.append(
    h('div.page-head', h('h1', 'Tasks')),
    taskForm(),
    h(
      'section.card.flush',
      h('table.list.tasks', h('thead', h('tr', ['Task', 'Agent', 'Status', 'Duration', 'Patch', 'Started'].map((t) => h('th', { class: t === 'Duration' || t === 'Started' ? 'num' : '' }, t)))), list),
      empty,
    ),
  );
  let tasks = [];
  const draw = () => {
    clear(
      list,
      tasks
        .slice()
        .reverse()
        .map((t) =>
          h(
            'tr',
            { dataset: { id: t.id } },
            h('td', { 'data-label': 'Task' }, h('a.name', { href: `#/tasks/${enc(t.id)}` }, title(t)), h('div.sub', t.id, ' · ', t.code)),
            h('td', { 'data-label': 'Agent' }, h('code.agent', t.agent)),
            h('td', { 'data-label': 'Status' }, badge(t.status)),
            h('td.num', { 'data-label': 'Duration' }, duration(t)),
            h('td', { 'data-label': 'Patch' }, patchStats(t.patch)),
            h('td.num', { 'data-label': 'Started' }, `${fmtAge(t.started_at)} ago`),
          ),
        ),
    );
    empty.hidden = tasks.length > 0;
  };
  const refresh = async () => {
    try {
      tasks = await api('/api/tasks');
      draw();
    } catch (e) {
      toast(e);
    }
  };
  scope.add(onStatus((c) => c.kind === 'task' && refresh()));
  scope.every(1000, () => tasks.some((t) => t.status === 'running') && draw());
  await refresh();
}

function taskForm() {
  const driver = driverSelect('f-task-driver');
  const agents = h('datalist#agents', AGENTS.map((a) => h('option', { value: a })));
  const agent = field('agent', 'Agent', { placeholder: 'claude-code, command:…', required: true, hint: 'command:SHELL runs a shell command (no API key)' });
  agent.querySelector('input').setAttribute('list', 'agents');
  const error = h('p.form-error', { hidden: true });
  const submit = h('button.primary', { type: 'submit' }, 'Start task');
  const form = h(
    'form.card.task-form',
    {
      id: 'task-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const body = formBody(form);
        submit.disabled = true;
        submit.textContent = 'Starting…';
        try {
          const t = await api('/api/tasks', { method: 'POST', body });
          location.hash = `#/tasks/${enc(t.id)}`;
        } catch (err) {
          showFormError(form, error, err);
        } finally {
          submit.disabled = false;
          submit.textContent = 'Start task';
        }
      },
    },
    h('h2', 'New task'),
    h(
      'div.grid',
      field('code', 'Code', { value: 'empty', required: true, placeholder: 'empty', hint: 'empty, a git URL or github:OWNER/REPO (host directories need serve --allow-host-paths)' }),
      agent,
      agents,
      h('label.field', h('span', 'Driver'), driver),
      field('timeout', 'Timeout', { placeholder: '30m' }),
      field('name', 'Name', { placeholder: 'optional label' }),
      field('prompt', 'Prompt', { textarea: true, placeholder: 'What the agent should do' }),
    ),
    error,
    h('div.form-actions', submit),
  );
  return form;
}

export async function taskPage(main, [id], scope) {
  let task = await api(`/api/tasks/${enc(id)}`);
  const head = h('div.page-head');
  const info = h('div');
  const log = h('pre.log', { 'aria-live': 'off' });
  const logState = h('span.muted');
  const patch = h('div.patch-slot', h('p.note', 'The patch shows when the task ends.'));
  main.append(
    h('a.back', { href: '#/tasks' }, '← Tasks'),
    head,
    info,
    h('div.task-grid', h('section.card.log-card', h('div.card-head', h('h2', 'Agent log'), logState), log), h('section.card.patch-card', h('div.card-head', h('h2', 'Patch'), h('div.tools.patch-tools')), patch)),
  );

  const drawInfo = () => {
    clear(head, h('h1', title(task), ' ', badge(task.status)));
    const rows = [
      ['ID', task.id],
      ['Agent', h('code', task.agent)],
      ['Code', task.code],
      ['Driver', task.driver],
      ['Duration', duration(task)],
      ['Exit code', task.exit_code ?? '–'],
      ['Sandbox', task.sandbox ?? '–'],
    ];
    clear(
      info,
      h(
        'section.card.task-info',
        h('dl.facts', rows.map(([k, v]) => [h('dt', k), h('dd', v)])),
        task.prompt ? h('div.prompt', h('h3', 'Prompt'), h('p', task.prompt)) : null,
        task.error ? h('p.form-error', task.error) : null,
      ),
    );
  };
  drawInfo();
  scope.every(1000, () => task.status === 'running' && drawInfo());

  let lastKind = null;
  let lastSpan = null;
  const add = (kind, line) => {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    if (kind === lastKind && lastSpan) lastSpan.textContent += `${line}\n`;
    else {
      lastSpan = h('span', { class: kind }, `${line}\n`);
      log.append(lastSpan);
      lastKind = kind;
    }
    if (stick) log.scrollTop = log.scrollHeight;
  };

  const showPatch = async () => {
    const tools = main.querySelector('.patch-tools');
    try {
      const text = await api(`/api/tasks/${enc(id)}/patch`, { as: 'text' });
      clear(patch, renderPatch(text));
      if (text) {
        const url = URL.createObjectURL(new Blob([text], { type: 'text/x-diff' }));
        scope.add(() => URL.revokeObjectURL(url));
        clear(tools, h('a.button.small.ghost', { href: url, download: `task-${id}.diff` }, 'Download .diff'));
      }
    } catch (e) {
      clear(patch, h('p.form-error', e.message));
    }
  };

  logState.textContent = task.status === 'running' ? 'following…' : '';
  const source = new EventSource(`/api/tasks/${enc(id)}/events`);
  scope.add(() => source.close());
  for (const kind of ['progress', 'stdout', 'stderr']) {
    source.addEventListener(kind, (e) => add(kind, JSON.parse(e.data).line));
  }
  source.addEventListener('done', (e) => {
    source.close();
    task = JSON.parse(e.data);
    logState.textContent = '';
    if (!log.textContent) log.append(h('span.muted', '(no output)'));
    drawInfo();
    showPatch();
  });
  source.onerror = () => {
    source.close();
    logState.textContent = 'stream ended';
  };
}
