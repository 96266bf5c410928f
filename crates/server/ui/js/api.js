// The daemon's API: JSON requests whose failures become ApiErrors carrying the server's
// message, the shared status-change stream, and the login cookie.

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

let unauthorized = () => {};
/** What to do when the daemon answers 401 (the app shows the login form). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/**
 * fetch() of one API route. `body` is sent as JSON; the answer is JSON, text (`as: 'text'`)
 * or bytes (`as: 'bytes'`); 204 gives null.
 */
export async function api(path, { method = 'GET', body, as, signal } = {}) {
  const init = { method, headers: {}, signal, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'The daemon did not answer. Is `stockade serve` still running?');
  }
  if (!res.ok) {
    let detail = null;
    try {
      detail = (await res.json()).error;
    } catch {
      // not JSON: a proxy's page, say
    }
    const err = new ApiError(
      res.status,
      detail?.code ?? 'http',
      detail?.message ?? `The daemon answered ${res.status} ${res.statusText}`.trim(),
      detail?.field,
    );
    if (res.status === 401) unauthorized(err);
    throw err;
  }
  if (res.status === 204) return null;
  if (as === 'text') return res.text();
  if (as === 'bytes') return new Uint8Array(await res.arrayBuffer());
  return res.json();
}

export const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Login: the token lives in the `stockade_token` cookie, which fetch, EventSource and WebSocket
// all send (the latter two cannot send an Authorization header).

export function setToken(token) {
  document.cookie = `stockade_token=${token}; Path=/; SameSite=Strict; Max-Age=${30 * 86400}`;
}

export function clearToken() {
  document.cookie = 'stockade_token=; Path=/; SameSite=Strict; Max-Age=0';
}

/** Whether the cookie holds a valid token, asked of a public route (no 401 in the console). */
export async function session() {
  const res = await fetch('/ui/session', { credentials: 'same-origin', cache: 'no-store' });
  if (!res.ok) return false;
  return (await res.json()).authenticated === true;
}

// ---------------------------------------------------------------------------------------------
// Status changes (`/api/events`): one EventSource for the whole app.

const listeners = new Set();
let source = null;
let liveChanged = () => {};

export function onLiveChange(fn) {
  liveChanged = fn;
}

/** Calls fn({kind, id, sandbox_id, status, at}) for every change until the returned function is called. */
export function onStatus(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function startEvents() {
  if (source) return;
  source = new EventSource('/api/events');
  source.onopen = () => liveChanged(true);
  source.onerror = () => liveChanged(false);
  for (const kind of ['sandbox', 'exec', 'task']) {
    source.addEventListener(kind, (e) => {
      let change;
      try {
        change = JSON.parse(e.data);
      } catch {
        return;
      }
      for (const fn of listeners) fn(change);
    });
  }
}

export function stopEvents() {
  source?.close();
  source = null;
  liveChanged(false);
}
