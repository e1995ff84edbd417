// The storefront's one way to call the API: every call's status and `x-trace-id` are
// recorded and shown with a link to its trace in Jaeger; every error becomes a sentence
// from the problem document (RFC 9457), never a blank page.

const TOKEN_KEY = "shop.session";

let jaegerUrl = null;
const listeners = new Set();

/// Learns the Jaeger UI's address from the gateway (GET /v1/config), once.
export async function loadConfig() {
  const answer = await call("GET", "/v1/config", { record: false });
  if (answer.ok) jaegerUrl = String(answer.body.jaeger_ui_url || "").replace(/\/+$/, "");
  return answer;
}

/// The link to a trace, or null if the gateway did not say where Jaeger is.
export function traceUrl(traceId) {
  return jaegerUrl && traceId ? `${jaegerUrl}/trace/${encodeURIComponent(traceId)}` : null;
}

// ---- the session: the token lives in sessionStorage (this tab only), never a cookie.

export function session() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
    if (saved && saved.token && saved.expires_at > Date.now()) return saved;
  } catch (_) { /* a damaged entry is no session */ }
  return null;
}

export function signIn(email, token, expiresIn) {
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({
    email, token, expires_at: Date.now() + expiresIn * 1000,
  }));
  notify();
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  notify();
}

export function onSessionChange(listener) { listeners.add(listener); }
function notify() { for (const l of listeners) l(session()); }

// ---- calls

/// The calls made by the page being shown: one entry per distinct method + path (a
/// poll replaces its own entry instead of filling the list).
const calls = new Map();

export function clearCalls() {
  calls.clear();
  renderCalls();
}

function recordCall(entry) {
  const key = `${entry.method} ${entry.path}`;
  calls.delete(key);
  calls.set(key, entry);
  while (calls.size > 12) calls.delete(calls.keys().next().value);
  renderCalls();
}

/// A link element to the trace of `traceId` (text: the id), or a plain span if Jaeger
/// is unknown.
export function traceLink(traceId, text) {
  const url = traceUrl(traceId);
  const element = document.createElement(url ? "a" : "span");
  element.className = "trace";
  element.textContent = text || traceId;
  element.dataset.traceId = traceId;
  if (url) {
    element.href = url;
    element.target = "_blank";
    element.rel = "noopener";
  }
  return element;
}

function renderCalls() {
  const list = document.getElementById("call-list");
  if (!list) return;
  list.replaceChildren(...[...calls.values()].reverse().map((c) => {
    const item = document.createElement("li");
    item.dataset.method = c.method;
    item.dataset.path = c.path;
    item.dataset.status = String(c.status);
    const what = document.createElement("code");
    what.textContent = `${c.method} ${c.path}`;
    const status = document.createElement("span");
    status.className = `code code-${String(c.status)[0]}xx`;
    status.textContent = c.status === 0 ? "network error" : String(c.status);
    item.append(what, " ", status);
    if (c.traceId) item.append(" ", traceLink(c.traceId, `trace ${c.traceId.slice(0, 8)}…`));
    return item;
  }));
}

/// An API answer: `ok`, `status`, `body` (JSON or null), `traceId`, `retryAfter`
/// (seconds), `replayed` (Idempotent-Replayed), and `network` (true if no answer came).
export async function call(method, path, { body, headers = {}, auth = false, record = true } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (auth) {
    const current = session();
    if (current) init.headers.Authorization = `Bearer ${current.token}`;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (_) {
    const answer = { ok: false, status: 0, body: null, traceId: null, network: true };
    if (record) recordCall({ method, path: pathOnly(path), status: 0, traceId: null });
    return answer;
  }
  let parsed = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try { parsed = await response.json(); } catch (_) { parsed = null; }
  }
  const answer = {
    ok: response.ok,
    status: response.status,
    body: parsed,
    traceId: response.headers.get("x-trace-id"),
    retryAfter: Number.parseInt(response.headers.get("retry-after") || "", 10) || null,
    replayed: response.headers.get("idempotent-replayed") === "true",
    network: false,
  };
  if (record) recordCall({ method, path: pathOnly(path), status: answer.status, traceId: answer.traceId });
  if (answer.status === 401 && auth) signOut(); // an expired or refused token is dropped
  return answer;
}

function pathOnly(path) { return path.split("?")[0]; }

/// A plain sentence for a failed answer, from its problem document.
export function sentence(answer, { names = new Map() } = {}) {
  if (answer.network) {
    return "The shop could not be reached: check your connection and try again.";
  }
  const problem = answer.body || {};
  const type = String(problem.type || "");
  const detail = problem.detail ? ` (${problem.detail})` : "";
  switch (answer.status) {
    case 400: return `The shop could not read this request${detail}.`;
    case 401: return "Your session has expired or was refused: please sign in again.";
    case 404: return type.endsWith("unknown-product")
      ? `A product in your cart no longer exists: ${productList(problem, names)}. Remove it and try again.`
      : "This was not found. It may have been removed, or belong to someone else.";
    case 409: return type.endsWith("insufficient-stock")
      ? `Not enough stock for ${productList(problem, names)}. Nothing was ordered: lower the quantity and try again.`
      : "This order is still being placed. Wait a moment; trying again will not place it twice.";
    case 413: return "This request is too large for the shop.";
    case 422: return `The shop refused these values${detail}.`;
    case 429: return "Too many requests.";
    case 503: return "The shop is busy or one of its services is down.";
    case 504: return "The shop did not answer in time. If this was an order, trying again will not place it twice.";
    default: return `Something went wrong (HTTP ${answer.status}${detail}).`;
  }
}

function productList(problem, names) {
  const ids = Array.isArray(problem.product_ids) ? problem.product_ids : [];
  if (ids.length === 0) return "a product";
  return ids.map((id) => names.get(id) || id).join(", ");
}
