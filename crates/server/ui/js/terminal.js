// A real terminal: xterm.js on a PTY exec (`bash -l`, or `sh`) over the exec's WebSocket. A
// terminal the UI opened earlier and that still runs is attached to again (its output replayed)
// rather than a new shell started.

import { FitAddon } from '/ui/vendor/addon-fit.mjs';
import * as xterm from '/ui/vendor/xterm.mjs';
import { ApiError, api, enc } from './api.js';
import { b64decode, b64encode } from './dom.js';

const MARK = 'STOCKADE_UI_TERMINAL';

const THEME = {
  background: '#0d1117',
  foreground: '#e6edf3',
  cursor: '#58a6ff',
  selectionBackground: '#264f78',
};

/**
 * Opens a terminal into `el` for sandbox `id`. `onState(text)` hears "connecting", "connected",
 * "exited …"; `scope` ends the socket (not the shell) when the page goes.
 */
export function openTerminal(el, id, scope, onState = () => {}) {
  const term = new xterm.Terminal({
    cursorBlink: true,
    fontSize: 13,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace',
    scrollback: 5000,
    theme: THEME,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  const state = { ws: null, exec: null, ended: false };
  scope.add(() => {
    state.ws?.close();
    term.dispose();
  });
  if (xterm.missing) {
    onState('unavailable');
    return { available: false, restart() {} };
  }
  const refit = () => {
    try {
      fit.fit();
    } catch {
      // not laid out yet
    }
  };
  refit();
  const observer = new ResizeObserver(refit);
  observer.observe(el);
  scope.add(() => observer.disconnect());

  const send = (msg) => {
    if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
  };
  const encoder = new TextEncoder();
  term.onData((data) => {
    if (state.ended) return;
    send({ type: 'stdin', data: b64encode(encoder.encode(data)) });
  });
  term.onResize(({ rows, cols }) => send({ type: 'resize', rows, cols }));

  async function shell() {
    const execs = await api(`/api/sandboxes/${enc(id)}/execs`);
    const mine = execs.reverse().find((x) => x.status === 'running' && x.request?.env?.[MARK] === '1' && x.request?.tty);
    if (mine) return mine;
    const body = (argv) => ({
      argv,
      stdin: true,
      tty: { rows: term.rows, cols: term.cols },
      env: { TERM: 'xterm-256color', [MARK]: '1' },
    });
    try {
      return await api(`/api/sandboxes/${enc(id)}/execs`, { method: 'POST', body: body(['bash', '-l']) });
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 422) throw e;
      return api(`/api/sandboxes/${enc(id)}/execs`, { method: 'POST', body: body(['sh']) });
    }
  }

  async function connect() {
    state.ended = false;
    onState('connecting');
    let exec;
    try {
      exec = await shell();
    } catch (e) {
      onState('failed');
      term.write(`\r\n\x1b[31m${e.message}\x1b[0m\r\n`);
      return;
    }
    if (scope.closed) return;
    state.exec = exec;
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/api/sandboxes/${enc(id)}/execs/${enc(exec.id)}/ws?from_seq=0`);
    state.ws = ws;
    ws.onopen = () => {
      onState('connected');
      send({ type: 'resize', rows: term.rows, cols: term.cols });
      term.focus();
    };
    ws.onmessage = (m) => {
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      if (ev.type === 'stdout' || ev.type === 'stderr') term.write(b64decode(ev.data));
      else if (ev.type === 'exited') {
        state.ended = true;
        const how = ev.exit?.signal ? `killed by signal ${ev.exit.signal}` : `exit ${ev.exit?.code ?? '?'}`;
        term.write(`\r\n\x1b[2m[shell ended: ${how}]\x1b[0m\r\n`);
        onState(`ended (${how})`);
      }
    };
    ws.onclose = () => {
      if (state.ws === ws && !state.ended && !scope.closed) onState('disconnected');
    };
  }

  connect();
  return {
    available: true,
    /** Ends the current shell (if any) and starts a new one. */
    async restart() {
      if (state.exec && !state.ended) send({ type: 'kill' });
      state.ws?.close();
      state.ws = null;
      term.reset();
      // The killed shell must not be picked up again.
      if (state.exec && !state.ended) await waitExit(id, state.exec.id);
      connect();
    },
  };
}

async function waitExit(id, execId) {
  for (let i = 0; i < 20; i++) {
    try {
      const x = await api(`/api/sandboxes/${enc(id)}/execs/${enc(execId)}`);
      if (x.status !== 'running') return;
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

