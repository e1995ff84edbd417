// The cart, kept in the browser (localStorage): lines of product id, name, unit price
// and quantity. The server sees it only at checkout.

const CART_KEY = "shop.cart";
const MAX_QUANTITY = 1000; // the API's limit per line
const MAX_LINES = 100; // the API's limit per order

const listeners = new Set();

export function lines() {
  try {
    const saved = JSON.parse(localStorage.getItem(CART_KEY) || "[]");
    return Array.isArray(saved) ? saved : [];
  } catch (_) {
    return [];
  }
}

function save(next) {
  localStorage.setItem(CART_KEY, JSON.stringify(next));
  for (const l of listeners) l(next);
}

export function onChange(listener) { listeners.add(listener); }

export function count() {
  return lines().reduce((n, l) => n + l.quantity, 0);
}

/// Adds `quantity` of `product` (a Product from the API); returns false if the cart
/// is full (100 lines).
export function add(product, quantity = 1) {
  const next = lines();
  const line = next.find((l) => l.product_id === product.id);
  if (line) {
    line.quantity = Math.min(MAX_QUANTITY, line.quantity + quantity);
  } else {
    if (next.length >= MAX_LINES) return false;
    next.push({
      product_id: product.id,
      name: product.name,
      unit_price_cents: product.price_cents,
      currency: product.currency,
      quantity: Math.min(MAX_QUANTITY, quantity),
    });
  }
  save(next);
  return true;
}

export function setQuantity(productId, quantity) {
  const q = Math.max(1, Math.min(MAX_QUANTITY, Math.trunc(quantity) || 1));
  save(lines().map((l) => (l.product_id === productId ? { ...l, quantity: q } : l)));
}

export function remove(productId) {
  save(lines().filter((l) => l.product_id !== productId));
}

export function clear() { save([]); }

/// Product names by id, for sentences about the cart's products.
export function names() {
  return new Map(lines().map((l) => [l.product_id, l.name]));
}

export { MAX_QUANTITY };

// ---- product names seen in the catalog, so an order's lines can be named without a
// call per line (an order holds product ids only). At most 500 kept.

const NAMES_KEY = "shop.names";

function knownNames() {
  try { return new Map(JSON.parse(localStorage.getItem(NAMES_KEY) || "[]")); } catch (_) { return new Map(); }
}

export function rememberNames(products) {
  const known = knownNames();
  for (const p of products) { known.delete(p.id); known.set(p.id, p.name); }
  localStorage.setItem(NAMES_KEY, JSON.stringify([...known].slice(-500)));
}

/// The name of product `id` if it was seen, else null.
export function nameOf(id) { return knownNames().get(id) || null; }
