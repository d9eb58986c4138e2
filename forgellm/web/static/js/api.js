// HTTP helpers: JSON calls that turn error bodies into exceptions, and a server-sent-events reader.

// How long to wait before asking again after a 429 when the answer does not say (Retry-After).
const DEFAULT_RETRY_MS = 3000;

export class ApiError extends Error {
  constructor(status, body, headers) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type;
    this.field = error.field;
    this.retryAfterMs = retryAfterMs(headers && headers.get("Retry-After"));
  }
}

// Retry-After in seconds (what the server sends, see forgellm/security/limits.py) as milliseconds;
// DEFAULT_RETRY_MS when it is absent or not a number of seconds.
function retryAfterMs(value) {
  const text = (value || "").trim();
  return /^\d+(\.\d+)?$/.test(text) ? Number(text) * 1000 : DEFAULT_RETRY_MS;
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data, response.headers);
  return data;
}

// POST `body` and call onData(object) for each `data:` line of the event stream.
export async function streamEvents(path, body, onData, signal) {
  const response = await fetch(path, {
    method: "POST", signal, headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null), response.headers);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (!line.startsWith("data:")) continue;
      const payload = line.slice(5).trim();
      if (payload === "[DONE]") return;
      try { onData(JSON.parse(payload)); } catch (err) { if (!(err instanceof SyntaxError)) throw err; }
    }
  }
}
