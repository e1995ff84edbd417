-- Order placement in one round trip: `place_order` runs the steps of
-- services/orders/src/orders/place.rs (see its module docs) inside the database, in the
-- calling statement's own transaction. orders calls it as one prepared statement
-- outside any explicit transaction, so the call *is* the transaction: it commits when
-- the function returns and rolls back, whole, when it raises. Nothing is half-written.
--
-- What stays in Rust: validating and hashing the request, the order's id and creation
-- time, its JSON as the API shows it (a draft: the database fills in the prices, the
-- currency and the total, which only it knows under the rows' locks), and the wording
-- of a refusal (a problem document with the request's trace id; see the refusal step).

-- One call's outcome; which columns are set depends on `outcome`.
create type placement_outcome as (
    -- `in_progress`  a request with the same key holds the key's lock right now;
    -- `stored`       the key has an answer: request_hash, response_status,
    --                response_body, order_id are the stored row (a replay, or a 422
    --                when the hash differs; the caller compares);
    -- `unknown_products` / `insufficient_stock`
    --                a refusal (product_ids in request order), not stored: the caller
    --                words it and calls again with the wording (the refusal step);
    -- `refused`      that worded refusal is now the key's stored answer;
    -- `mixed_currencies`  a client mistake, nothing stored;
    -- `created`      the order was written: prices (request order), currency,
    --                stock_after (each line's product, request order), and the stored
    --                answer (201, the order's JSON, its id).
    outcome         text,
    product_ids     uuid[],
    prices          bigint[],
    currency        text,
    stock_after     integer[],
    request_hash    bytea,
    response_status smallint,
    response_body   jsonb,
    order_id        uuid
);

create function place_order(
    p_user            uuid,
    p_key             text,
    -- hash(user, key), computed by orders (`lock_key`), the advisory lock's key.
    p_lock_key        bigint,
    p_request_hash    bytea,
    -- The validated lines, in request order (distinct products, quantities 1..=1000).
    p_product_ids     uuid[],
    p_quantities      integer[],
    p_order_id        uuid,
    p_created_at      timestamptz,
    -- The order's JSON with placeholder prices, currency and total.
    p_order_draft     jsonb,
    p_topic           text,
    p_trace_context   jsonb,
    -- What is left of the request's deadline, in ms (null: none). It bounds the wait
    -- for the products' locks, and an order finished after it is rolled back: the
    -- caller stopped waiting, so nothing it was not told about may be committed.
    p_budget_ms       integer,
    -- A refusal as worded by the caller after an earlier call returned it (null on a
    -- first call): its kind, products, status and problem document.
    p_refusal         text,
    p_refusal_ids     uuid[],
    p_refusal_status  smallint,
    p_refusal_body    jsonb
) returns placement_outcome
language plpgsql
as $$
declare
    result    placement_outcome;
    stored    idempotency_keys%rowtype;
    unknown   uuid[];
    short     uuid[];
    currencies bigint;
    total     bigint;
    items     jsonb;
    taken     integer;
    -- When the request's deadline passes (never, without one).
    deadline  timestamptz := case when p_budget_ms is null then 'infinity'::timestamptz
                                  else statement_timestamp() + p_budget_ms * interval '1 millisecond' end;
begin
    -- Step 2: the key's lock. A request with the same key that is running holds it;
    -- "in progress" is a lock, not a row, so a crash can never leave a key stuck.
    if not pg_try_advisory_xact_lock(p_lock_key) then
        result.outcome := 'in_progress';
        return result;
    end if;

    -- ... and the key's stored answer. In a function, each statement takes its own
    -- snapshot (read committed), this one after the lock: a request with the same key
    -- has either committed, and its answer is seen here, or not taken the lock yet.
    select * into stored from idempotency_keys k where k.user_id = p_user and k.key = p_key;
    -- Step 3: a stored answer is the answer (the caller replays it, or refuses a
    -- different body).
    if found then
        result.outcome := 'stored';
        result.request_hash := stored.request_hash;
        result.response_status := stored.response_status;
        result.response_body := stored.response_body;
        result.order_id := stored.order_id;
        return result;
    end if;

    -- Step 4: the products, locked in id order (one global order: multi-line orders
    -- cannot deadlock), no longer than the request's deadline.
    if p_budget_ms is not null then
        perform set_config('lock_timeout', greatest(p_budget_ms, 1) || 'ms', true);
    end if;
    with locked as materialized (
        select id, price_cents, currency, stock from products
        where id = any(p_product_ids)
        order by id
        for no key update
    )
    select array_agg(l.id order by l.line) filter (where p.id is null),
           array_agg(l.id order by l.line) filter (where p.stock < l.quantity),
           array_agg(p.price_cents order by l.line),
           array_agg(p.stock - l.quantity order by l.line),
           count(distinct p.currency),
           min(p.currency),
           sum(p.price_cents * l.quantity)
      into unknown, short, result.prices, result.stock_after, currencies,
           result.currency, total
      from unnest(p_product_ids, p_quantities) with ordinality as l(id, quantity, line)
      left join locked p on p.id = l.id;

    -- ... and checked: unknown products first, then short stock. Both are refusals,
    -- stored for the key so that a retry gets the same answer even after a restock.
    -- Their wording (a problem document with the request's trace id) is the caller's:
    -- the first call returns the refusal; the caller words it and calls again; if that
    -- call comes to the same refusal, it stores the wording. (If the stock changed in
    -- between, the new outcome stands: an order, or another refusal to word.)
    if unknown is not null or short is not null then
        result.outcome := case when unknown is not null then 'unknown_products'
                               else 'insufficient_stock' end;
        result.product_ids := coalesce(unknown, short);
        result.prices := null;
        result.stock_after := null;
        result.currency := null;
        if p_refusal is distinct from result.outcome
           or p_refusal_ids is distinct from result.product_ids then
            return result;
        end if;
        insert into idempotency_keys (user_id, key, request_hash, response_status, response_body)
        values (p_user, p_key, p_request_hash, p_refusal_status, p_refusal_body);
        if clock_timestamp() > deadline then
            raise exception 'the request''s deadline passed' using errcode = 'query_canceled';
        end if;
        result.outcome := 'refused';
        result.response_status := p_refusal_status;
        result.response_body := p_refusal_body;
        return result;
    end if;
    -- One currency for all products: a client mistake, not stored.
    if currencies > 1 then
        result.outcome := 'mixed_currencies';
        result.prices := null;
        result.stock_after := null;
        result.currency := null;
        return result;
    end if;

    -- Step 5: the order's JSON, the draft with the locked prices.
    select jsonb_agg(item || jsonb_build_object('unit_price_cents', result.prices[i]) order by i)
      into items
      from jsonb_array_elements(p_order_draft -> 'items') with ordinality as t(item, i);
    result.response_body := p_order_draft
        || jsonb_build_object('items', items, 'currency', result.currency, 'total_cents', total);

    -- ... stock, order, lines, outbox event and the key's answer, in one statement (one
    -- executor run rather than five). CHECK (stock >= 0) backs the check above. No
    -- request with the same key can have stored an answer since the read above: it
    -- would have needed the key's lock, which this transaction holds.
    with decremented as (
        -- (`p.id = any(...)` is redundant but makes the rows be found through the
        -- primary key: joined to unnest() alone, the planner may scan the whole table.)
        update products p set stock = p.stock - l.quantity, updated_at = now()
          from unnest(p_product_ids, p_quantities) as l(id, quantity)
         where p.id = l.id and p.id = any(p_product_ids)
        returning p.id
    ), placed as (
        insert into orders (id, user_id, status, total_cents, currency, created_at, updated_at)
        values (p_order_id, p_user, 'placed', total, result.currency, p_created_at, p_created_at)
    ), lined as (
        insert into order_items (order_id, line, product_id, quantity, unit_price_cents)
        select p_order_id, l.line - 1, l.id, l.quantity, result.prices[l.line]
          from unnest(p_product_ids, p_quantities) with ordinality as l(id, quantity, line)
    ), evented as (
        insert into outbox (topic, aggregate_id, event_type, payload, trace_context)
        values (p_topic, p_order_id, 'order.placed',
                jsonb_build_object('type', 'order.placed', 'order', result.response_body),
                p_trace_context)
    ), keyed as (
        insert into idempotency_keys (user_id, key, request_hash, response_status, response_body, order_id)
        values (p_user, p_key, p_request_hash, 201, result.response_body, p_order_id)
    )
    select count(*) into taken from decremented;
    if taken <> cardinality(p_product_ids) then
        -- Cannot happen (the rows are locked and were checked); never committed if it does.
        raise exception 'decremented % of % products', taken, cardinality(p_product_ids);
    end if;
    -- The caller stopped waiting at its deadline: what it was not told about is rolled
    -- back (query_canceled, as statement_timeout raises it; orders answers 504).
    if clock_timestamp() > deadline then
        raise exception 'the request''s deadline passed' using errcode = 'query_canceled';
    end if;

    -- Step 6 (the commit) follows when the calling statement ends.
    result.outcome := 'created';
    result.response_status := 201;
    result.order_id := p_order_id;
    return result;
end
$$;
-- Index scans only, in the function and in the foreign-key checks its inserts fire. A
-- session caches its plans: one that started when `products` was a page or two plans a
-- sequential scan for it, and keeps scanning once thousands of orders a second have
-- left dead row versions on twenty pages (docs/performance.md: an eighth of Postgres'
-- time per order, and growing, went there). Every lookup here is by primary key.
alter function place_order set enable_seqscan = off;
