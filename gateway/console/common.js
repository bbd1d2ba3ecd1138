// Helpers shared by the console's pages: API calls, DOM building (text
// only: nothing the server sends is ever parsed as HTML), formatting, the
// Prometheus text parser and a polling loop.

/** Stages in the order a delivery normally goes through them. */
export const STAGE_PATH = ["Created", "HeadedToPickup", "HeadedToDropoff", "Completed"];

/** Readable names of stages and drone states. */
export const LABELS = {
  Created: "Created",
  Rescheduled: "Rescheduled",
  HeadedToPickup: "Headed to pickup",
  HeadedToDropoff: "Headed to drop-off",
  Completed: "Completed",
  Cancelled: "Cancelled",
  Scheduled: "Scheduled",
  Available: "Available",
  Returning: "Returning",
};

/** The stage names by integer code (the API's `stage`). */
export const STAGE_NAMES = ["Created", "Rescheduled", "HeadedToPickup", "HeadedToDropoff", "Completed", "Cancelled", "Scheduled"];

export const isTerminal = (stage) => stage === "Completed" || stage === "Cancelled";

/**
 * Whether a drone of `GET /api/drones` is on a delivery: by its delivery id
 * when the token may see it, else by its status (the id is left out for
 * tokens without the Dispatcher or Operator role).
 */
export const isBusy = (d) => Boolean(d.deliveryId) || d.status === "HeadedToPickup" || d.status === "HeadedToDropoff";

export const label = (name) => LABELS[name] ?? name;

/** Where the signed-in access token is kept: this tab's `sessionStorage`. */
export const TOKEN_KEY = "dronedelivery.token";

/** The access token this tab signed in with, if any (see `session.js`). */
export const apiToken = () => sessionStorage.getItem(TOKEN_KEY);

/** The event `api` dispatches on `document` when the API refuses the signed-in token. */
export const REFUSED_EVENT = "dronedelivery:token-refused";

/**
 * Calls the API. Resolves to `{ok, status, body, headers}` whatever the
 * status (`body` is parsed JSON when the response is JSON, else text);
 * rejects only when the network fails.
 *
 * Calls to `/api/…` carry the signed-in access token unless `token` is
 * given; other paths (`/admin`, probes, metrics) only an explicit one, so
 * the token goes nowhere it is not needed. A `401` to the signed-in token
 * (expired, or the engine's keys rotated it out) is announced with
 * `REFUSED_EVENT`, so the page can ask for a new one.
 */
export async function api(path, { method = "GET", body, token, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const signedIn = token === undefined && path.startsWith("/api/") ? apiToken() : null;
  const bearer = token ?? signedIn;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  const type = res.headers.get("content-type") ?? "";
  let parsed = null;
  if (res.status !== 204 && res.status !== 304) {
    parsed = type.includes("json") ? await res.json().catch(() => null) : await res.text();
  }
  const answer = { ok: res.ok, status: res.status, body: parsed, headers: res.headers };
  if (res.status === 401 && signedIn) {
    document.dispatchEvent(new CustomEvent(REFUSED_EVENT, { detail: problemText(answer) }));
  }
  return answer;
}

/** One line for a failed call: the problem's detail, or the status. */
export function problemText(res) {
  const detail = res.body && typeof res.body === "object" ? res.body.detail : null;
  return detail ? `${detail} (HTTP ${res.status})` : `HTTP ${res.status}`;
}

/**
 * Builds an element. `attrs` keys are attributes, except `text` (text
 * content), `dataset` (data-* values) and `on` (event listeners).
 */
export function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "circle", "rect", "line", "polyline", "path", "text", "title", "desc"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Sets an element's text only when it changes (keeps screen readers calm). */
export function setText(node, text) {
  const value = String(text);
  if (node && node.textContent !== value) node.textContent = value;
}

/** `12:04:31`, in the browser's time zone. */
export function clock(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "—";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** A date and time in the reader's locale (`5 Dec 2026, 14:05`). */
export function dateTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "—";
  return date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/** `1 h 02 min`, `3 min 05 s`, `42 s`. */
export function duration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m > 0) return `${m} min ${String(s).padStart(2, "0")} s`;
  return `${s} s`;
}

/** `in 3 min 05 s` or `now`, counting down to `iso`. */
export function countdown(iso, now = Date.now()) {
  if (!iso) return "not known yet";
  const at = new Date(iso).getTime();
  if (Number.isNaN(at)) return "not known yet";
  const left = at - now;
  if (left <= 500) return `due now (${clock(iso)})`;
  return `in ${duration(left)} (${clock(iso)})`;
}

/** A number with thousands separators; `—` when unknown. */
export function count(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return value.toLocaleString([], { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** `47.6100, -122.3300`. */
export function coords(loc) {
  if (!loc) return "—";
  return `${loc.latitude.toFixed(4)}, ${loc.longitude.toFixed(4)}`;
}

/** The console URL of a delivery's tracking page. */
export const trackUrl = (id) => `/console/track/${encodeURIComponent(id)}`;

/**
 * Runs `task` now and then every `interval` ms after each run has finished
 * (never two at once), pausing while the tab is hidden. Returns a function
 * that stops it.
 */
export function poll(task, interval) {
  let timer = null;
  let stopped = false;
  let running = false;
  const run = async () => {
    timer = null;
    if (stopped || running) return;
    if (document.visibilityState === "hidden") return;
    running = true;
    try {
      await task();
    } catch (e) {
      console.error(e);
    } finally {
      running = false;
      if (!stopped) timer = setTimeout(run, interval);
    }
  };
  const onVisible = () => {
    if (document.visibilityState === "visible" && timer === null && !running) run();
  };
  document.addEventListener("visibilitychange", onVisible);
  run();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}
