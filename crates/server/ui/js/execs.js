// Exec history of a sandbox; a click replays an exec's stored output (and follows it live while
// it runs) from its event stream.

import { api, enc } from './api.js';
import { badge, clear, fmtAge, fmtDuration, h, plainText } from './dom.js';

function argvText(x) {
  const argv = x.request?.argv ?? [];
  const text = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
  return x.request?.env?.STOCKADE_UI_TERMINAL === '1' ? `${text}  (terminal)` : text;
}

function exitText(x) {
  if (x.status === 'running') return '';
  const e = x.exit;
  if (!e) return ''; // lost: the badge says so
  if (e.timed_out) return 'timed out';
  if (e.oom) return 'out of memory';
  if (e.signal) return `signal ${e.signal}`;
  return `exit ${e.code}`;
}

export function execHistory(id, scope) {
  const list = h('ul.execs', { role: 'list' });
  const replay = h('div.replay', { hidden: true });
  const el = h('section.card.execs-card', h('div.card-head', h('h2', 'Exec history'), h('span.muted.count')), list, replay);
  let source = null;
  let selected = null;
  scope.add(() => source?.close());

  async function load() {
    let execs;
    try {
      execs = await api(`/api/sandboxes/${enc(id)}/execs`);
    } catch (e) {
      clear(list, h('li.note.error', e.message));
      return;
    }
    el.querySelector('.count').textContent = execs.length ? `${execs.length}` : '';
    clear(
      list,
      execs.reverse().map((x) =>
        h(
          'li',
          h(
            'button.exec',
            { type: 'button', class: x.id === selected ? 'selected' : '', dataset: { exec: x.id }, onclick: () => play(x) },
            h('code.argv', argvText(x)),
            h('span.exec-meta', badge(x.status), h('span', exitText(x)), h('span.muted', x.exit ? fmtDuration(x.exit.duration_ms) : ''), h('span.muted', `${fmtAge(x.created_at)} ago`)),
          ),
        ),
      ),
      execs.length ? null : h('li.note', 'No execs yet: what runs in the terminal or through the API shows here.'),
    );
  }

  function play(x) {
    source?.close();
    selected = x.id;
    for (const b of list.querySelectorAll('.exec')) b.classList.toggle('selected', b.dataset.exec === x.id);
    const out = h('pre.output');
    const status = h('span.muted', 'replaying…');
    clear(
      replay,
      h('div.viewer-head', h('strong', 'Output of '), h('code', x.id), status, h('div.tools', h('button.small.ghost', { type: 'button', onclick: () => { source?.close(); replay.hidden = true; selected = null; load(); } }, 'Close'))),
      out,
    );
    replay.hidden = false;
    let stdoutTail = '';
    let stderrTail = '';
    let lastStream = null;
    let lastSpan = null;
    const add = (kind, text) => {
      if (kind === lastStream && lastSpan) lastSpan.textContent += text;
      else {
        lastSpan = h('span', { class: kind }, text);
        out.append(lastSpan);
        lastStream = kind;
      }
    };
    source = new EventSource(`/api/sandboxes/${enc(id)}/execs/${enc(x.id)}/events?encoding=text`);
    const onOutput = (kind) => (e) => {
      const ev = JSON.parse(e.data);
      // Escape sequences may be split between events: clean whole lines only.
      let buf = (kind === 'stdout' ? stdoutTail : stderrTail) + (ev.data ?? '');
      const cut = buf.lastIndexOf('\n') + 1;
      const done = buf.slice(0, cut);
      buf = buf.slice(cut);
      if (kind === 'stdout') stdoutTail = buf;
      else stderrTail = buf;
      if (done) add(kind, plainText(done));
    };
    source.addEventListener('stdout', onOutput('stdout'));
    source.addEventListener('stderr', onOutput('stderr'));
    source.addEventListener('started', (e) => {
      status.textContent = `pid ${JSON.parse(e.data).pid}, running`;
    });
    source.addEventListener('exited', (e) => {
      source.close();
      if (stdoutTail) add('stdout', plainText(stdoutTail));
      if (stderrTail) add('stderr', plainText(stderrTail));
      const ev = JSON.parse(e.data);
      status.textContent = exitText({ status: 'exited', exit: ev.exit });
      if (!out.textContent) out.append(h('span.muted', '(no output)'));
    });
    source.onerror = () => {
      // The stream ended without an exit (a lost exec) or broke: do not reconnect forever.
      source.close();
      status.textContent = 'stream ended';
    };
  }

  return { el, load };
}
