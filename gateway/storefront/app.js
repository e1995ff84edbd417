// The storefront's pages (hash routes) and the checkout. No framework, no build step:
// DOM built with createElement/textContent (never innerHTML with data), so the page
// runs under a Content-Security-Policy without inline script.

import * as api from "./api.js";
import * as cart from "./cart.js";

const PAGE_SIZE = 12;
const ORDER_POLL_MS = 1000; // while an order is `placed`, its page asks again this often
const STOCK_POLL_MS = 5000; // a product page keeps its stock current

// ---- small DOM helpers

function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

/// Replaces `node`'s children with `children` (nested arrays flattened; null, undefined
/// and false left out, so a condition can stand in the list).
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function money(cents, currency = "EUR") {
  return new Intl.NumberFormat("en", { style: "currency", currency }).format(cents / 100);
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString("en-GB");
}

// ---- the page's lifetime: timers belong to the page shown and stop when it changes

let scope = { timers: new Set(), alive: true };

function newScope() {
  scope.alive = false;
  for (const t of scope.timers) clearTimeout(t);
  scope = { timers: new Set(), alive: true };
  return scope;
}

function later(current, ms, fn) {
  if (!current.alive) return;
  const t = setTimeout(() => { current.timers.delete(t); if (current.alive) fn(); }, ms);
  current.timers.add(t);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- messages: an error or notice as a sentence, with its call's trace link

/// A message element: `text`, and the trace link of the call it is about.
function message(kind, text, answer) {
  const box = el("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  if (answer && answer.traceId) box.append(" ", api.traceLink(answer.traceId, "See the trace"));
  return box;
}

/// A message shown once, on the next page (e.g. "Order placed" on the order's page).
let pendingFlash = null;

function flash(kind, text, answer) { pendingFlash = { kind, text, answer }; }

function showFlash() {
  const area = document.getElementById("flash");
  fill(area);
  if (pendingFlash) {
    area.append(message(pendingFlash.kind, pendingFlash.text, pendingFlash.answer));
    pendingFlash = null;
  }
}

/// A countdown sentence for a 429/503's Retry-After; calls `done` at zero.
function countdown(current, prefix, seconds, done) {
  const text = el("span", { class: "countdown" });
  let left = Math.max(1, seconds || 1);
  const tick = () => {
    if (left <= 0) { text.textContent = `${prefix} You can try again now.`; done(); return; }
    text.textContent = `${prefix} You can try again in ${left} s.`;
    left -= 1;
    later(current, 1000, tick);
  };
  tick();
  return text;
}

// ---- header: cart count and session

function renderHeader() {
  document.getElementById("cart-count").textContent = String(cart.count());
  const slot = document.getElementById("session");
  const current = api.session();
  if (current) {
    fill(slot,
      el("span", { class: "who" }, current.email),
      " ",
      el("button", { type: "button", class: "link", id: "signout", onclick: () => {
        api.signOut();
        flash("notice", "You are signed out.");
        go("#/");
      } }, "Sign out"),
    );
  } else {
    fill(slot, el("a", { href: "#/signin", id: "signin-link" }, "Sign in"));
  }
}

// ---- pages

async function catalogPage(view, current, params) {
  const cursor = params.get("cursor");
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (cursor) query.set("cursor", cursor);
  const answer = await api.call("GET", `/v1/products?${query}`);
  if (!current.alive) return;
  if (!answer.ok) { fill(view, el("h1", {}, "Catalog"), message("error", api.sentence(answer), answer)); return; }
  cart.rememberNames(answer.body.items);
  const grid = el("ul", { class: "products" }, answer.body.items.map((p) => el("li", { class: "card", dataset: { productId: p.id } },
    el("h2", {}, el("a", { href: `#/product/${p.id}` }, p.name)),
    el("p", { class: "price" }, money(p.price_cents, p.currency)),
    el("p", { class: "stock" }, p.stock > 0 ? `${p.stock} in stock` : "Out of stock"),
    el("button", { type: "button", class: "add", disabled: p.stock <= 0, "aria-label": `Add ${p.name} to cart`, onclick: (e) => addToCart(e.target, p, 1) }, "Add to cart"),
  )));
  const history = (params.get("back") || "").split(",").filter(Boolean);
  const pager = el("nav", { class: "pager", "aria-label": "Pages" },
    history.length || cursor
      ? el("a", { href: pageHref(history.slice(0, -1), history[history.length - 1]) }, "← Previous")
      : null,
    answer.body.next_cursor
      ? el("a", { href: pageHref(cursor ? [...history, cursor] : [...history, ""], answer.body.next_cursor), rel: "next" }, "Next →")
      : null,
  );
  fill(view, el("h1", {}, "Catalog"), grid, pager);
}

function pageHref(history, cursor) {
  const q = new URLSearchParams();
  if (cursor) q.set("cursor", cursor);
  const back = history.filter((c, i) => c || i > 0);
  if (back.length) q.set("back", back.join(","));
  const s = q.toString();
  return s ? `#/?${s}` : "#/";
}

function addToCart(button, product, quantity) {
  if (!cart.add(product, quantity)) {
    button.after(message("error", "Your cart is full (100 lines at most)."));
    return;
  }
  const note = el("span", { class: "added", role: "status" }, " Added.");
  button.after(note);
  setTimeout(() => note.remove(), 1500);
}

async function productPage(view, current, id) {
  const answer = await api.call("GET", `/v1/products/${encodeURIComponent(id)}`);
  if (!current.alive) return;
  if (!answer.ok) { fill(view, el("h1", {}, "Product"), message("error", api.sentence(answer), answer)); return; }
  const p = answer.body;
  cart.rememberNames([p]);
  const stock = el("p", { class: "stock", id: "stock", "aria-live": "polite" });
  const showStock = (n) => { stock.textContent = n > 0 ? `${n} in stock (live)` : "Out of stock"; };
  showStock(p.stock);
  const quantity = el("input", { id: "quantity", type: "number", min: 1, max: cart.MAX_QUANTITY, value: 1, inputmode: "numeric" });
  fill(view,
    el("p", {}, el("a", { href: "#/" }, "← Catalog")),
    el("h1", {}, p.name),
    el("p", { class: "sku" }, `SKU ${p.sku}`),
    el("p", {}, p.description),
    el("p", { class: "price" }, money(p.price_cents, p.currency)),
    stock,
    el("form", { class: "buy", onsubmit: (e) => { e.preventDefault(); addToCart(e.submitter || e.target, p, Number(quantity.value) || 1); } },
      el("label", { for: "quantity" }, "Quantity"), quantity,
      el("button", { type: "submit" }, "Add to cart")),
  );
  const poll = async () => {
    const fresh = await api.call("GET", `/v1/products/${encodeURIComponent(id)}`);
    if (fresh.ok && current.alive) showStock(fresh.body.stock);
    later(current, STOCK_POLL_MS, poll);
  };
  later(current, STOCK_POLL_MS, poll);
}

function signinPage(view, current, params) {
  const next = params.get("next") || "#/";
  const status = el("div", { id: "signin-status" });
  const email = el("input", { id: "email", type: "email", name: "email", autocomplete: "username", required: true, value: "user1@shop.test" });
  const password = el("input", { id: "password", type: "password", name: "password", autocomplete: "current-password", required: true });
  const button = el("button", { type: "submit", id: "signin" }, "Sign in");
  const form = el("form", { class: "signin", onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    const answer = await api.call("POST", "/v1/auth/token", { body: { email: email.value, password: password.value } });
    button.disabled = false;
    if (answer.ok) {
      api.signIn(email.value, answer.body.access_token, answer.body.expires_in);
      flash("notice", `Signed in as ${email.value}.`, answer);
      go(next);
    } else if (answer.status === 401) {
      fill(status, message("error", "The email or password is wrong.", answer));
    } else if (answer.status === 429) {
      button.disabled = true;
      fill(status, el("p", { class: "message error", role: "alert" },
        countdown(current, "Too many sign-in attempts.", answer.retryAfter, () => { button.disabled = false; })));
    } else {
      fill(status, message("error", api.sentence(answer), answer));
    }
  } },
  el("label", { for: "email" }, "Email"), email,
  el("label", { for: "password" }, "Password"), password,
  button);
  fill(view,
    el("h1", {}, "Sign in"),
    el("p", { class: "hint" }, "Demo users: user1@shop.test / password1, user2@shop.test / password2 (from `orders seed`)."),
    form, status);
  email.focus();
}

// ---- the cart and the checkout

/// The checkout attempt in progress: one Idempotency-Key per attempt (per cart
/// content), kept in sessionStorage so a retry after a network failure, a reload or a
/// double click sends the same key and orders places at most one order.
const ATTEMPT_KEY = "shop.checkout";

function attemptFor(bodyText) {
  let attempt = null;
  try { attempt = JSON.parse(sessionStorage.getItem(ATTEMPT_KEY) || "null"); } catch (_) { /* none */ }
  if (!attempt || attempt.body !== bodyText) {
    attempt = { key: newKey(), body: bodyText };
    sessionStorage.setItem(ATTEMPT_KEY, JSON.stringify(attempt));
  }
  return attempt;
}

function newKey() {
  // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `checkout-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

let checkingOut = false;

async function checkout(current, button, status) {
  if (checkingOut) return; // a double click sends nothing twice
  checkingOut = true;
  button.disabled = true;
  try {
    const body = { items: cart.lines().map((l) => ({ product_id: l.product_id, quantity: l.quantity })) };
    const attempt = attemptFor(JSON.stringify(body));
    fill(status, message("notice", "Placing your order…"));
    let answer;
    for (let tries = 1; ; tries += 1) {
      answer = await api.call("POST", "/v1/orders", { body, auth: true, headers: { "Idempotency-Key": attempt.key } });
      // No answer, or the gateway or orders could not finish: the same key again is
      // safe (orders replays the first answer or places the order once).
      const retryable = answer.network || answer.status === 502 || answer.status === 503 || answer.status === 504;
      if (!retryable || tries >= 3) break;
      fill(status, message("notice", `${api.sentence(answer)} Trying again with the same order key (attempt ${tries + 1} of 3)…`, answer));
      await sleep(Math.min(5, answer.retryAfter || tries) * 1000);
    }
    if (answer.ok) {
      sessionStorage.removeItem(ATTEMPT_KEY);
      cart.clear();
      flash("notice", answer.replayed ? "Your order was already placed; here it is." : "Order placed. Its payment is being settled.", answer);
      go(`#/orders/${answer.body.id}`);
      return;
    }
    if (answer.status === 401) {
      fill(status, message("error", api.sentence(answer), answer), " ",
        el("a", { href: `#/signin?next=${encodeURIComponent("#/cart")}` }, "Sign in"));
    } else if (answer.status === 429 || answer.status === 503) {
      fill(status, el("p", { class: "message error", role: "alert" },
        countdown(current, api.sentence(answer), answer.retryAfter, () => { button.disabled = false; }),
        answer.traceId ? " " : null, answer.traceId ? api.traceLink(answer.traceId, "See the trace") : null));
      return; // the button comes back at the end of the countdown
    } else {
      fill(status, message("error", api.sentence(answer, { names: cart.names() }), answer));
    }
    button.disabled = false;
  } finally {
    checkingOut = false;
  }
}

/// A quantity changed: the cart, that line's price and the total are updated in place
/// (the page is not rebuilt, so the keyboard focus stays where it was).
function updateLine(view, line, input) {
  cart.setQuantity(line.product_id, Number(input.value));
  const saved = cart.lines().find((l) => l.product_id === line.product_id);
  if (!saved) return;
  // Out of range or not a whole number: show what the cart holds (an emptied field is
  // left for the user to type into; the cart keeps 1 meanwhile).
  if (input.value !== "" && Number(input.value) !== saved.quantity) input.value = String(saved.quantity);
  const row = input.closest("tr");
  row.querySelector(".line-total").textContent = money(saved.unit_price_cents * saved.quantity, saved.currency);
  const total = cart.lines().reduce((n, l) => n + l.unit_price_cents * l.quantity, 0);
  view.querySelector("#cart-total").textContent = money(total, saved.currency);
}

function cartPage(view, current) {
  const lines = cart.lines();
  if (lines.length === 0) {
    fill(view, el("h1", {}, "Cart"), el("p", {}, "Your cart is empty. ", el("a", { href: "#/" }, "Browse the catalog.")));
    return;
  }
  const currency = lines[0].currency;
  const total = lines.reduce((n, l) => n + l.unit_price_cents * l.quantity, 0);
  const status = el("div", { id: "checkout-status" });
  const signedIn = Boolean(api.session());
  const button = el("button", { type: "button", id: "checkout", disabled: !signedIn }, "Place order");
  button.addEventListener("click", () => checkout(current, button, status));
  fill(view,
    el("h1", {}, "Cart"),
    el("table", { class: "cart" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Product"), el("th", { scope: "col" }, "Quantity"), el("th", { scope: "col" }, "Price"), el("th", { scope: "col" }, el("span", { class: "sr-only" }, "Remove")))),
      el("tbody", {}, lines.map((l) => el("tr", { dataset: { productId: l.product_id } },
        el("td", {}, el("a", { href: `#/product/${l.product_id}` }, l.name)),
        el("td", {}, el("label", { class: "sr-only", for: `q-${l.product_id}` }, `Quantity of ${l.name}`),
          el("input", { id: `q-${l.product_id}`, class: "quantity", type: "number", min: 1, max: cart.MAX_QUANTITY, value: l.quantity, inputmode: "numeric",
            onchange: (e) => updateLine(view, l, e.target) })),
        el("td", { class: "price line-total" }, money(l.unit_price_cents * l.quantity, l.currency)),
        el("td", {}, el("button", { type: "button", class: "link", "aria-label": `Remove ${l.name}`, onclick: () => { cart.remove(l.product_id); route(); } }, "Remove")),
      ))),
      el("tfoot", {}, el("tr", {}, el("th", { scope: "row", colspan: 2 }, "Total"), el("td", { class: "price", id: "cart-total" }, money(total, currency)), el("td")))),
    signedIn ? null : el("p", {}, el("a", { href: `#/signin?next=${encodeURIComponent("#/cart")}` }, "Sign in"), " to place your order."),
    el("p", { class: "hint" }, "Each checkout is sent with one idempotency key: a double click, or a retry after a network failure, never places two orders."),
    button,
    status,
  );
}

// ---- orders

const REASONS = {
  declined: "the payment was declined",
  payment_failed: "the payment could not be completed",
};

function statusBadge(order) {
  const badge = el("span", { class: `status status-${order.status}`, dataset: { status: order.status } }, order.status);
  if (order.status === "cancelled" && order.cancel_reason) {
    return el("span", {}, badge, " ", el("span", { class: "reason", dataset: { reason: order.cancel_reason } },
      `Cancelled: ${REASONS[order.cancel_reason] || order.cancel_reason}.`));
  }
  return badge;
}

function requireSession(view, next) {
  if (api.session()) return true;
  fill(view, el("h1", {}, "My orders"),
    el("p", {}, "Please ", el("a", { href: `#/signin?next=${encodeURIComponent(next)}` }, "sign in"), " to see your orders."));
  return false;
}

async function ordersPage(view, current) {
  if (!requireSession(view, "#/orders")) return;
  const list = el("ul", { class: "orders", id: "orders" });
  const problem = el("div");
  fill(view, el("h1", {}, "My orders"), problem, list);
  const load = async () => {
    const answer = await api.call("GET", "/v1/orders?limit=20", { auth: true });
    if (!current.alive) return;
    if (!answer.ok) { fill(problem, message("error", api.sentence(answer), answer)); return; }
    fill(problem);
    if (answer.body.items.length === 0) {
      fill(list, el("li", {}, "No orders yet. ", el("a", { href: "#/" }, "Browse the catalog.")));
      return;
    }
    fill(list, ...answer.body.items.map((o) => el("li", { dataset: { orderId: o.id } },
      el("a", { href: `#/orders/${o.id}` }, `Order ${o.id.slice(0, 8)}`), " · ",
      when(o.created_at), " · ", money(o.total_cents, o.currency), " · ", statusBadge(o))));
    // Keep the list current while an order is still settling.
    if (answer.body.items.some((o) => o.status === "placed")) later(current, ORDER_POLL_MS, load);
  };
  await load();
}

async function orderPage(view, current, id) {
  if (!requireSession(view, `#/orders/${id}`)) return;
  const body = el("div", { id: "order" });
  fill(view, el("p", {}, el("a", { href: "#/orders" }, "← My orders")), el("h1", {}, "Order"), body);
  const load = async () => {
    const answer = await api.call("GET", `/v1/orders/${encodeURIComponent(id)}`, { auth: true });
    if (!current.alive) return;
    if (!answer.ok) { fill(body, message("error", api.sentence(answer), answer)); return; }
    const o = answer.body;
    fill(body,
      el("dl", { class: "order", dataset: { orderId: o.id } },
        el("dt", {}, "Number"), el("dd", { class: "id" }, o.id),
        el("dt", {}, "Status"), el("dd", { id: "order-status" }, statusBadge(o)),
        el("dt", {}, "Placed"), el("dd", {}, when(o.created_at)),
        o.updated_at ? [el("dt", {}, "Updated"), el("dd", {}, when(o.updated_at))] : null,
        el("dt", {}, "Total"), el("dd", {}, money(o.total_cents, o.currency))),
      el("table", { class: "cart" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Product"), el("th", { scope: "col" }, "Quantity"), el("th", { scope: "col" }, "Unit price"))),
        el("tbody", {}, o.items.map((i) => el("tr", {},
          el("td", {}, el("a", { href: `#/product/${i.product_id}` }, cart.nameOf(i.product_id) || `Product ${i.product_id.slice(0, 8)}`)),
          el("td", {}, String(i.quantity)),
          el("td", { class: "price" }, money(i.unit_price_cents, o.currency)))))),
      o.status === "placed" ? el("p", { class: "hint" }, "Waiting for the payment; this page updates by itself.") : null,
    );
    if (o.status === "placed") later(current, ORDER_POLL_MS, load);
  };
  await load();
}

// ---- routing

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  const current = newScope();
  api.clearCalls();
  showFlash();
  renderHeader();
  const view = document.getElementById("view");
  const [path, query = ""] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  document.querySelectorAll("nav a").forEach((a) => a.removeAttribute("aria-current"));
  const active = document.querySelector(`nav a[href="#/${parts[0] || ""}"]`);
  if (active) active.setAttribute("aria-current", "page");
  if (parts.length === 0) await catalogPage(view, current, params);
  else if (parts[0] === "product" && parts[1]) await productPage(view, current, parts[1]);
  else if (parts[0] === "signin") signinPage(view, current, params);
  else if (parts[0] === "cart") cartPage(view, current);
  else if (parts[0] === "orders" && parts[1]) await orderPage(view, current, parts[1]);
  else if (parts[0] === "orders") await ordersPage(view, current);
  else fill(view, el("h1", {}, "Not found"), el("p", {}, el("a", { href: "#/" }, "Back to the catalog.")));
  document.title = `${view.querySelector("h1")?.textContent || "shop"} · shop`;
  document.body.dataset.page = parts[0] || "catalog";
}

async function start() {
  cart.onChange(renderHeader);
  api.onSessionChange(renderHeader);
  window.addEventListener("hashchange", route);
  window.addEventListener("storage", renderHeader); // another tab changed the cart
  // The skip link moves the focus without changing the route (the hash is the route).
  document.querySelector(".skip").addEventListener("click", (e) => {
    e.preventDefault();
    document.getElementById("view").focus();
  });
  await api.loadConfig();
  await route();
  document.body.dataset.ready = "true";
}

start();
