-- The order lifecycle (placed -> paid | cancelled) and the payments service's tables.
-- Ownership (API.md, "Data ownership"): orders owns `orders`; payments owns `payments`
-- and `payments_outbox`. No foreign key crosses that line: payments knows an order only
-- through the `order.placed` event it consumed.

alter table orders drop constraint orders_status_check;
alter table orders add constraint orders_status_check
    check (status in ('placed', 'paid', 'cancelled'));
-- Why a cancelled order was cancelled (`declined`, `payment_failed`); set iff cancelled.
alter table orders add column cancel_reason text;
alter table orders add constraint orders_cancel_reason_check
    check ((status = 'cancelled') = (cancel_reason is not null));
-- Moves with every status change (placement sets it to created_at).
alter table orders add column updated_at timestamptz;
update orders set updated_at = created_at;
alter table orders alter column updated_at set not null;
alter table orders alter column updated_at set default now();

-- One payment per order, keyed by the order id: a redelivered `order.placed` event finds
-- the row and charges nothing twice.
create table payments (
    order_id       uuid primary key,
    user_id        uuid not null,
    status         text not null check (status in ('succeeded', 'failed')),
    amount_cents   bigint not null check (amount_cents >= 0),
    currency       text not null,
    -- The provider's charge id (the provider call's idempotency key is the order id).
    charge_id      text,
    -- Why it failed: `declined` (final answer of the provider) or `payment_failed`
    -- (the provider kept failing for every attempt the consumer allows).
    failure_reason text,
    -- Provider calls made for this payment.
    attempts       integer not null check (attempts >= 1),
    created_at     timestamptz not null default now(),
    check ((status = 'failed') = (failure_reason is not null))
);

-- payments' own transactional outbox, the same shape as orders' `outbox`, relayed to
-- `shop:events:payments` by the same relay (shop_service::streams::outbox).
create table payments_outbox (
    id            bigint generated always as identity primary key,
    topic         text not null,
    aggregate_id  uuid not null,
    event_type    text not null,
    payload       jsonb not null,
    trace_context jsonb not null default '{}'::jsonb,
    created_at    timestamptz not null default now(),
    published_at  timestamptz
);
create index payments_outbox_unpublished on payments_outbox (id) where published_at is null;
