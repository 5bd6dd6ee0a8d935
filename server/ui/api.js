// The session, the JSON API, and a tiny DOM builder.

/** The signed-in user and CSRF token, or null. */
export const session = { user: null, csrf: null };

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Answers boot.js asked for before the modules loaded, each taken once. */
const early = window.ccEarly || {};
/** Forgets them (a new session makes them stale). */
export const dropEarly = () => { for (const k in early) delete early[k]; };

/** Called on a 401 from anywhere: the app goes to the sign-in page. */
export let onUnauthorized = () => {};
export function setOnUnauthorized(f) { onUnauthorized = f; }

/**
 * A request to the JSON API. GET by default; a `body` makes it a POST unless `method` says
 * otherwise. Non-GET requests carry the CSRF token. Errors throw ApiError with the server's
 * message; status 0 means no connection.
 */
export async function api(path, { method, body, quiet401 } = {}) {
  method = method || (body === undefined ? 'GET' : 'POST');
  const send = async () => {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') {
      if (session.csrf) headers['X-CSRF-Token'] = session.csrf;
      if (body !== undefined) headers['Content-Type'] = 'application/json';
    }
    try {
      return await fetch(path, {
        method, headers, credentials: 'same-origin', cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, 'offline');
    }
  };
  const pre = method === 'GET' && early[path];
  delete early[path];
  let res = pre ? await pre.catch(send) : await send();
  // Refused: if the CSRF token rotated under us (another tab signed in again), once more with
  // the current one; a refusal for the role stays as it is.
  if (res.status === 403 && method !== 'GET' && path !== '/api/v1/session') {
    const sent = session.csrf;
    try {
      await loadSession();
      if (session.csrf && session.csrf !== sent) res = await send();
    } catch (_) { /* keep the first answer */ }
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (res.status === 401 && !quiet401) {
    setSession(null);
    onUnauthorized();
  }
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || res.statusText || String(res.status));
  return data;
}

/** The current session from the server, or null when signed out. */
export async function loadSession() {
  try {
    setSession(await api('/api/v1/session', { quiet401: true }));
    return session.user;
  } catch (e) {
    if (e.status === 401) {
      setSession(null);
      return null;
    }
    throw e;
  }
}
/** Records a session body (or null when signed out). */
export function setSession(s) {
  if (!s) dropEarly();
  session.user = s ? s.user : null;
  session.csrf = s ? s.csrf_token : null;
  try { localStorage.setItem('cc.in', s ? '1' : '0'); } catch (_) { /* private mode */ }
}

const SERVICE = ['admin', 'manager', 'engineer'];
/** Whether the user works tickets (service roles except sales). */
export const canTickets = () => SERVICE.includes(session.user?.role);
/** Whether the user may send remote commands (start, stop, setpoints): service roles except
 * sales, and owners. The server checks again. */
export const canOperate = () => [...SERVICE, 'owner'].includes(session.user?.role);
/** Whether the user manages people, rotations and paging policies (service administrators and
 * managers). The server checks again. */
export const canManagePaging = () => ['admin', 'manager'].includes(session.user?.role);
/** Sales staff see the record read-only, without site details. */
export const isSales = () => session.user?.role === 'sales';

/** A DOM element: h('a', {href, class, onclick}, children…). `text` sets the text. */
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  if (attrs) for (const k in attrs) {
    const v = attrs[k];
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of kids.flat(9)) if (c != null && c !== false) el.append(c.nodeType ? c : String(c));
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
/** An SVG element. */
export function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  if (attrs) for (const k in attrs) if (attrs[k] != null) el.setAttribute(k, attrs[k]);
  for (const c of kids.flat(9)) if (c != null && c !== false) el.append(c.nodeType ? c : String(c));
  return el;
}

/** A small icon by name: status shapes and grade marks (shape, not colour alone). */
export function icon(name) {
  const paths = {
    running: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm-1.5 14.2-4.2-4.2 1.4-1.4 2.8 2.8 6-6 1.4 1.4z',
    stopped: 'M4 4h16v16H4z',
    gateway: 'M3 12h18v8H3zm3 3v2h2v-2zm4 0v2h2v-2zM11 3h2v8h-2z',
    alarm: 'M12 2 1 21h22zm-1 7h2v6h-2zm0 8h2v2h-2z',
    offline: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm4.6 13.2-1.4 1.4L12 13.4l-3.2 3.2-1.4-1.4 3.2-3.2-3.2-3.2 1.4-1.4 3.2 3.2 3.2-3.2 1.4 1.4-3.2 3.2z',
    stale: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 2a8 8 0 1 1 0 16 8 8 0 0 1 0-16zm-1 3v6l5 3 1-1.6-4-2.4V7z',
    bell: 'M12 22a2 2 0 0 0 2-2h-4a2 2 0 0 0 2 2zm6-6v-5c0-3.1-1.6-5.6-4.5-6.3V4a1.5 1.5 0 0 0-3 0v.7C7.6 5.4 6 7.9 6 11v5l-2 2v1h16v-1z',
    unknown: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm1 16h-2v-2h2zm2-7.4-.9.9c-.7.7-1.1 1.3-1.1 2.5h-2v-.5c0-1.1.4-2.1 1.2-2.8l1.2-1.3c.4-.3.6-.8.6-1.4a2 2 0 0 0-4 0H8a4 4 0 0 1 8 0c0 .9-.4 1.7-1 2.6z',
  };
  return s('svg', { class: 'ic', viewBox: '0 0 24 24', 'aria-hidden': 'true' }, s('path', { d: paths[name] || paths.unknown }));
}
