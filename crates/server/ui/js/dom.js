// Small DOM and formatting helpers. Text always goes in as text nodes, never as HTML.

/** h('div.card#x', {onclick, class, ...attrs}, ...children) */
export function h(tag, attrs, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || 'div');
  for (const part of rest) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs !== undefined && attrs !== null && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className += (el.className ? ' ' : '') + v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c);
  return el;
}

export function fmtBytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function fmtDuration(ms) {
  if (ms === undefined || ms === null) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

/** How long ago a Unix-seconds time was, short: "5s", "3m", "2h", "4d". */
export function fmtAge(unixSecs) {
  const s = Math.max(0, Math.floor(Date.now() / 1000 - unixSecs));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400 * 2) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function fmtTime(unixSecs) {
  if (!unixSecs) return '';
  return new Date(unixSecs * 1000).toLocaleString();
}

export function badge(status) {
  return h('span.badge', { class: `s-${String(status).replace(/[^a-z_]/gi, '')}` }, String(status).replace(/_/g, ' '));
}

/** A button that asks once more before it acts. */
export function confirmButton(label, sure, action, cls = 'danger') {
  let armed = null;
  const btn = h('button', { type: 'button', class: `small ${cls}` }, label);
  btn.addEventListener('click', async () => {
    if (!armed) {
      btn.textContent = sure;
      btn.classList.add('armed');
      armed = setTimeout(() => {
        armed = null;
        btn.textContent = label;
        btn.classList.remove('armed');
      }, 3000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    btn.disabled = true;
    try {
      await action();
    } finally {
      btn.disabled = false;
      btn.textContent = label;
      btn.classList.remove('armed');
    }
  });
  return btn;
}

export function b64encode(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function b64decode(s) {
  const bin = atob(s || '');
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Terminal output as plain text: escape sequences dropped, carriage returns and backspaces applied. */
export function plainText(s) {
  s = s.replace(/\x1b\[[0-9;?<>=!]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()*+][A-Za-z0-9]|\x1b[=>78cDEHMNOZ]/g, '');
  s = s.replace(/\r+\n/g, '\n');
  const lines = s.split('\n').map((line) => {
    if (line.includes('\r')) line = line.slice(line.lastIndexOf('\r') + 1);
    if (!line.includes('\b')) return line;
    const out = [];
    for (const ch of line) ch === '\b' ? out.pop() : out.push(ch);
    return out.join('');
  });
  return lines.join('\n').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
}

/** Lifetime of one page: intervals, listeners and sockets it started end with it. */
export class Scope {
  constructor() {
    this.cleanups = [];
    this.closed = false;
  }
  add(fn) {
    if (this.closed) fn();
    else this.cleanups.push(fn);
    return fn;
  }
  /** A scope that ends with this one, or sooner. */
  child() {
    const c = new Scope();
    this.add(() => c.close());
    return c;
  }
  every(ms, fn) {
    const t = setInterval(fn, ms);
    this.add(() => clearInterval(t));
    return t;
  }
  close() {
    this.closed = true;
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        fn();
      } catch (e) {
        console.warn('cleanup', e);
      }
    }
  }
}

/** Shows a message for a few seconds; errors show their server message, never raw JSON. */
export function toast(message, kind = 'error') {
  const text = message instanceof Error ? message.message : String(message);
  const el = h('div.toast', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, text);
  const close = () => el.remove();
  el.append(h('button.ghost.small', { type: 'button', 'aria-label': 'Dismiss', onclick: close }, '×'));
  document.getElementById('toasts').append(el);
  setTimeout(close, kind === 'error' ? 8000 : 4000);
}
