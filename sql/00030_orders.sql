-- +goose Up
-- Orders, their timeline, refunds and idempotency keys (package orders).

CREATE TABLE orders (
    id                   text PRIMARY KEY,              -- ord_…
    app                  text NOT NULL,                 -- minigate app id
    platform             text NOT NULL,                 -- wechat | qq | alipay
    user_id              text,                          -- usr_…; NULL for an openid without a minigate user
    payer_openid         text NOT NULL DEFAULT '',      -- openid, or Alipay buyer_open_id
    payer_alipay_user_id text NOT NULL DEFAULT '',      -- Alipay buyer_id (2088…)
    out_trade_no         text NOT NULL,
    description          text NOT NULL,
    attach               text NOT NULL DEFAULT '',
    amount               bigint NOT NULL CHECK (amount > 0),  -- fen
    currency             text NOT NULL DEFAULT 'CNY',
    status               text NOT NULL DEFAULT 'created'
        CHECK (status IN ('created', 'paying', 'paid', 'partially_refunded', 'refunded', 'closed', 'failed')),
    needs_review         boolean NOT NULL DEFAULT false,
    prepay_id            text NOT NULL DEFAULT '',       -- WeChat/QQ prepay_id, Alipay trade_no
    pay_params           jsonb,                          -- signed client parameters from creation
    prepay_claimed_until timestamptz,                    -- a prepay call is in flight until then
    transaction_id       text NOT NULL DEFAULT '',
    refunded_amount      bigint NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    expires_at           timestamptz NOT NULL,
    paid_at              timestamptz,
    closed_at            timestamptz,
    next_check_at        timestamptz,                    -- recovery: when to query the platform next
    check_count          integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (app, out_trade_no)
);

CREATE INDEX orders_app_id_idx ON orders (app, id);
CREATE INDEX orders_status_id_idx ON orders (status, id);
CREATE INDEX orders_user_id_idx ON orders (user_id, id) WHERE user_id IS NOT NULL;
CREATE INDEX orders_needs_review_idx ON orders (id) WHERE needs_review;
CREATE INDEX orders_recovery_idx ON orders (next_check_at) WHERE status IN ('created', 'paying');

-- order_events is each order's timeline: state moves, flags, refunds.
CREATE TABLE order_events (
    id          bigserial PRIMARY KEY,
    order_id    text NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    kind        text NOT NULL,                 -- created, prepaid, status, flagged, refund_requested, refund_succeeded, …
    from_status text NOT NULL DEFAULT '',
    to_status   text NOT NULL DEFAULT '',
    source      text NOT NULL CHECK (source IN ('notify', 'query', 'api', 'reconcile')),
    detail      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX order_events_order_id_idx ON order_events (order_id, id);

CREATE TABLE refunds (
    id                 text PRIMARY KEY,             -- ref_…
    order_id           text NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    app                text NOT NULL,
    out_refund_no      text NOT NULL,
    amount             bigint NOT NULL CHECK (amount > 0),  -- fen
    reason             text NOT NULL DEFAULT '',
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    platform_refund_id text NOT NULL DEFAULT '',
    failure            text NOT NULL DEFAULT '',     -- the platform's reason, for failed refunds
    claimed_until      timestamptz,                  -- a refund call is in flight until then
    succeeded_at       timestamptz,
    next_check_at      timestamptz,
    check_count        integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (app, out_refund_no)
);

CREATE INDEX refunds_order_id_idx ON refunds (order_id, id);
CREATE INDEX refunds_recovery_idx ON refunds (next_check_at) WHERE status = 'pending';

-- idempotency_keys remembers which resource a request created, per scope
-- (route and app or order) and client key, with a hash of the request.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    resource_id  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE refunds;
DROP TABLE order_events;
DROP TABLE orders;
