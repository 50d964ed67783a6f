// The API client: the token (from the URL fragment once, then localStorage), JSON calls with the
// Authorization header, authenticated downloads as blob URLs, and Server-Sent Events read over
// fetch() (EventSource cannot send headers), resumed with Last-Event-ID.
const KEY = 'chunkgrpo.token';

export class Unauthorized extends Error {}
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
  }
}

// Takes #token=... out of the URL into localStorage; true when it found one.
export function takeTokenFromUrl() {
  const m = location.hash.match(/^#token=([^&]*)/);
  if (!m) return false;
  localStorage.setItem(KEY, decodeURIComponent(m[1]));
  history.replaceState(null, '', `${location.pathname}${location.search}#/experiments`);
  return true;
}
export const token = () => localStorage.getItem(KEY);
export const setToken = (t) => localStorage.setItem(KEY, t);
export const forgetToken = () => localStorage.removeItem(KEY);

let onUnauthorized = () => {};
export const whenUnauthorized = (fn) => { onUnauthorized = fn; };

async function request(path, init = {}) {
  const r = await fetch(`/api/v1${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${token()}`, ...init.headers },
  });
  if (r.status === 401) {
    onUnauthorized();
    throw new Unauthorized('the server did not accept the token');
  }
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new ApiError(r.status, body.error || { code: `http_${r.status}`, message: r.statusText });
  }
  return r;
}

export async function api(path, { method = 'GET', body } = {}) {
  const init = { method };
  if (body !== undefined) {
    init.headers = { 'Content-Type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  const r = await request(path, init);
  return r.status === 204 ? null : r.json();
}

// An object URL of an artifact's bytes (links cannot carry the Authorization header).
export async function blobUrl(experimentId, name) {
  const r = await request(`/experiments/${experimentId}/artifacts/${name.split('/').map(encodeURIComponent).join('/')}`);
  return URL.createObjectURL(await r.blob());
}

// subscribe(path, onEvent, lastEventId?): reads the event stream at path, calls
// onEvent({id, type, data}) per event and reconnects (after 1 s) with Last-Event-ID when the
// stream ends or fails. Returns the function that stops it.
// While at least one stream is connected, <body data-live> is set (the header shows "live").
let openStreams = 0;
const countStream = (d) => { openStreams += d; document.body.toggleAttribute('data-live', openStreams > 0); };

export function subscribe(path, onEvent, lastEventId = null) {
  const stop = new AbortController();
  let lastId = lastEventId;
  (async () => {
    while (!stop.signal.aborted) {
      try {
        const headers = { Accept: 'text/event-stream' };
        if (lastId != null) headers['Last-Event-ID'] = String(lastId);
        const r = await request(path, { headers, signal: stop.signal });
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '', ev = {};
        countStream(1);
        for (;;) {
          const { value, done } = await reader.read().catch((e) => { countStream(-1); throw e; });
          if (done) { countStream(-1); break; }
          buf += value;
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).replace(/\r$/, '');
            buf = buf.slice(nl + 1);
            if (line === '') {
              if (ev.data !== undefined) onEvent({ id: ev.id, type: ev.event || 'message', data: JSON.parse(ev.data) });
              ev = {};
            } else if (!line.startsWith(':')) {
              const c = line.indexOf(':');
              const field = c < 0 ? line : line.slice(0, c);
              const v = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
              if (field === 'data') ev.data = ev.data === undefined ? v : `${ev.data}\n${v}`;
              else if (field === 'event') ev.event = v;
              else if (field === 'id') ev.id = lastId = v;
            }
          }
        }
      } catch (e) {
        if (stop.signal.aborted || e instanceof Unauthorized) return;
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  })();
  return () => stop.abort();
}
