-- The whole schema of the shop database. Ownership (see API.md, "Data ownership"):
-- the gateway owns `users`; orders owns everything else. No foreign key crosses
-- that line (orders.user_id is the token's `sub`, not a reference into `users`).

create table users (
    id            uuid primary key,
    email         text not null unique check (email = lower(email)),
    -- argon2id, PHC string format.
    password_hash text not null,
    created_at    timestamptz not null default now()
);

create table products (
    id          uuid primary key,
    sku         text not null unique,
    name        text not null,
    description text not null default '',
    price_cents bigint not null check (price_cents >= 0),
    currency    text not null default 'EUR' check (currency ~ '^[A-Z]{3}$'),
    -- Never negative: the last line of defence against overselling.
    stock       integer not null check (stock >= 0),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

create table orders (
    id          uuid primary key,
    user_id     uuid not null,
    status      text not null default 'placed' check (status in ('placed')),
    total_cents bigint not null check (total_cents >= 0),
    currency    text not null,
    created_at  timestamptz not null default now()
);
-- The caller's own orders, newest first, keyset-paginated.
create index orders_user_id_created_at_id on orders (user_id, created_at desc, id desc);

create table order_items (
    order_id         uuid not null references orders (id) on delete cascade,
    -- Position of the line in the order as placed (responses keep that order).
    line             smallint not null check (line >= 0),
    product_id       uuid not null references products (id),
    quantity         integer not null check (quantity between 1 and 1000),
    unit_price_cents bigint not null check (unit_price_cents >= 0),
    primary key (order_id, product_id)
);
create index order_items_product_id on order_items (product_id);

-- One row per (user, Idempotency-Key), written in the same transaction as the order
-- it produced (or with the deterministic error it produced), so a crash can never
-- leave a key stuck "in progress": in-progress is an advisory lock, not a row.
create table idempotency_keys (
    user_id         uuid not null,
    key             text not null,
    request_hash    bytea not null,
    response_status smallint not null,
    response_body   jsonb not null,
    order_id        uuid,
    created_at      timestamptz not null default now(),
    primary key (user_id, key)
);
create index idempotency_keys_created_at on idempotency_keys (created_at);

-- Transactional outbox: written with the order, published by the relay job.
create table outbox (
    id            bigint generated always as identity primary key,
    topic         text not null,
    aggregate_id  uuid not null,
    event_type    text not null,
    payload       jsonb not null,
    -- W3C trace context of the request that produced the event (traceparent, tracestate).
    trace_context jsonb not null default '{}'::jsonb,
    created_at    timestamptz not null default now(),
    published_at  timestamptz
);
create index outbox_unpublished on outbox (id) where published_at is null;
