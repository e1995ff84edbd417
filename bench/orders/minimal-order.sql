-- The minimal transaction equivalent to placing a one-line order: stock decrement,
-- order, order line, outbox event. pgbench runs it as the database's own ceiling.
\set p random(1, 100)
BEGIN;
UPDATE products SET stock = stock - 1, updated_at = now() WHERE sku = 'SKU-' || lpad(:p::text, 5, '0') AND stock >= 1;
WITH o AS (
  INSERT INTO orders (id, user_id, status, total_cents, currency) VALUES (gen_random_uuid(), gen_random_uuid(), 'placed', 100, 'EUR') RETURNING id
), i AS (
  INSERT INTO order_items (order_id, line, product_id, quantity, unit_price_cents)
  SELECT o.id, 0, (SELECT id FROM products WHERE sku = 'SKU-' || lpad(:p::text, 5, '0')), 1, 100 FROM o
)
INSERT INTO outbox (topic, aggregate_id, event_type, payload) SELECT 'orders', o.id, 'order.placed', '{}'::jsonb FROM o;
COMMIT;
