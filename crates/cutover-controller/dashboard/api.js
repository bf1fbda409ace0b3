// The API as the dashboard uses it: reads (with the read token when reads need one),
// writes with the API token from this tab's sessionStorage, sent as a header and never as
// a cookie, and a release's status stream read over fetch (EventSource cannot send a
// header).

const TOKEN_KEY = "cutover-token";

/** The page's settings, from its <meta name="cutover-config"> (never an inline script). */
export function config() {
  const meta = document.querySelector('meta[name="cutover-config"]');
  try {
    return JSON.parse(meta ? meta.content : "{}");
  } catch {
    return {};
  }
}

const settings = config();
const base = settings.base || "";

/** The token held for this browser tab, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps `value` as this tab's token (or forgets it with null). */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error the API answered, with its HTTP status, kind and message. */
export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

function headers() {
  const h = { Accept: "application/json" };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : {};
    throw new ApiError(response.status, error.kind || "http", error.message || `HTTP ${response.status}`);
  }
  return body;
}

/** GET `path` (under /v1) as JSON. */
export async function get(path) {
  const response = await fetch(`${base}/v1${path}`, { headers: headers(), credentials: "omit" });
  return answer(response);
}

/** POST `path` (under /v1) with no body, as the CLI's commands do. */
export async function post(path) {
  const response = await fetch(`${base}/v1${path}`, {
    method: "POST",
    headers: headers(),
    credentials: "omit",
  });
  return answer(response);
}

/**
 * Follows a release's status stream, calling `onStatus` with each status and `onState`
 * with "live", "retrying" or "ended". Reconnects after a second while the rollout is not
 * done. Returns a function that stops it.
 */
export function follow(name, onStatus, onState) {
  let stopped = false;
  let controller = null;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      let done = false;
      try {
        const response = await fetch(`${base}/v1/releases/${encodeURIComponent(name)}/events`, {
          headers: { ...headers(), Accept: "text/event-stream" },
          credentials: "omit",
          signal: controller.signal,
        });
        if (!response.ok) {
          await answer(response);
        }
        onState("live");
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done: end } = await reader.read();
          if (end) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const event = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = event
              .split("\n")
              .filter((line) => line.startsWith("data:"))
              .map((line) => line.slice(5).trim())
              .join("\n");
            if (!data) continue;
            const status = JSON.parse(data);
            done = status.done;
            onStatus(status);
          }
        }
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && error.status === 404) {
          onState("ended");
          return;
        }
      }
      if (done || stopped) {
        onState("ended");
        return;
      }
      onState("retrying");
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
