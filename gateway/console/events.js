// Server-sent events read with `fetch`, for the tracking page.
//
// `EventSource` cannot send an `Authorization` header, and with
// `--auth-mode jwt` the tracking stream needs one like every `/api` call.
// This reads the same `text/event-stream` through `fetch`, with the
// signed-in token, and keeps what `EventSource` gave the page:
// - `event`, `data` and `id` fields parsed as the HTML standard says
//   (comments ignored, multi-line data joined with "\n", the last id kept
//   across events);
// - after a dropped connection, or when the server ends a long-lived
//   stream, it reconnects with `Last-Event-ID`, so the server sends only
//   the stage events that were missed;
// - it stops for good on `204` (the server has nothing more: every event
//   was seen), on a client error (`401`, `403`, `404`: retrying cannot
//   help), or when the page closes it.

import { apiToken, problemText, REFUSED_EVENT } from "./common.js";

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/**
 * Follows the event stream at `path`. Handlers:
 * - `onOpen()`: a connection is open;
 * - `onEvent({type, data, lastEventId})`: one event;
 * - `onRetry(reason)`: the connection was lost or refused for a while; it
 *   is tried again after `retryMs`;
 * - `onStop(answer)`: the server refused for good (`{status, body}`);
 * - `onDone()`: the server answered `204`: nothing more will come.
 *
 * Returns `{close()}`.
 */
export function follow(path, { onOpen = () => {}, onEvent, onRetry = () => {}, onStop = () => {}, onDone = () => {}, retryMs = 3000 }) {
  const controller = new AbortController();
  const { signal } = controller;
  let lastEventId = null;

  const connect = async () => {
    const headers = { Accept: "text/event-stream" };
    const token = apiToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
    const res = await fetch(path, { headers, cache: "no-store", signal });
    if (res.status === 204) return { done: true };
    const type = res.headers.get("content-type") ?? "";
    if (!res.ok || !res.body || !type.startsWith("text/event-stream")) {
      const body = type.includes("json") ? await res.json().catch(() => null) : null;
      const answer = { ok: false, status: res.status, body, headers: res.headers };
      if (res.status === 401 && token) {
        document.dispatchEvent(new CustomEvent(REFUSED_EVENT, { detail: problemText(answer) }));
      }
      const fatal = res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429;
      return { refused: answer, fatal };
    }
    onOpen();
    await read(res.body, (event) => {
      if (event.lastEventId !== null) lastEventId = event.lastEventId;
      onEvent(event);
    });
    return { ended: true };
  };

  (async () => {
    while (!signal.aborted) {
      let wait = retryMs;
      try {
        const result = await connect();
        if (signal.aborted) return;
        if (result.done) {
          onDone();
          return;
        }
        if (result.fatal) {
          onStop(result.refused);
          return;
        }
        if (result.refused) onRetry(problemText(result.refused));
        // A stream the server ended (its lifetime is bounded) is picked up
        // again at once; the server answers 204 if nothing is left.
        else wait = 250;
      } catch (e) {
        if (signal.aborted) return;
        onRetry(e.message);
      }
      await sleep(wait, signal);
    }
  })();

  return { close: () => controller.abort() };
}

/**
 * Reads a `text/event-stream` body, calling `dispatch` with each complete
 * event (`{type, data, lastEventId}`), until the body ends.
 */
async function read(body, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      let line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length > 0) dispatch({ type: type || "message", data: data.join("\n"), lastEventId: id });
        type = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") type = val;
      else if (field === "data") data.push(val);
      else if (field === "id" && !val.includes("\0")) id = val;
    }
  }
}
