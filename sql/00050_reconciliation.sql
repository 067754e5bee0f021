-- +goose Up
-- Reconciliation runs and their discrepancies (package reconcile). A run is
-- never replaced: re-running a day stores a new run that points at the
-- previous one and records what changed.

CREATE TABLE reconciliation_runs (
    id                text PRIMARY KEY,                  -- rec_…
    app               text NOT NULL,
    platform          text NOT NULL,
    bill_date         date NOT NULL,                     -- the business day, Asia/Shanghai
    status            text NOT NULL CHECK (status IN ('matched', 'discrepancies')),
    triggered_by      text NOT NULL CHECK (triggered_by IN ('cli', 'api', 'schedule')),
    matched           integer NOT NULL,
    discrepancy_count integer NOT NULL,
    totals            jsonb NOT NULL,                    -- bill, bill summary and local totals
    previous_run_id   text REFERENCES reconciliation_runs (id),
    diff              jsonb,                             -- new / resolved / unchanged vs the previous run
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL
);

CREATE INDEX reconciliation_runs_app_date_idx ON reconciliation_runs (app, bill_date, finished_at);

CREATE TABLE reconciliation_discrepancies (
    run_id         text NOT NULL REFERENCES reconciliation_runs (id) ON DELETE CASCADE,
    position       integer NOT NULL,
    kind           text NOT NULL,                        -- missing_local, missing_platform, amount_mismatch, …
    subject        text NOT NULL CHECK (subject IN ('payment', 'refund', 'totals')),
    out_trade_no   text NOT NULL DEFAULT '',
    out_refund_no  text NOT NULL DEFAULT '',
    transaction_id text NOT NULL DEFAULT '',
    order_id       text NOT NULL DEFAULT '',
    field          text NOT NULL DEFAULT '',             -- totals: count, amount, refunds, fees
    bill_amount    bigint,                               -- fen
    local_amount   bigint,                               -- fen
    bill_status    text NOT NULL DEFAULT '',
    local_status   text NOT NULL DEFAULT '',
    action         text NOT NULL CHECK (action IN ('none', 'recovered', 'flagged')),
    note           text NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, position)
);

-- A business day's payments and refunds, for comparing with bills.
CREATE INDEX orders_app_paid_at_idx ON orders (app, paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX refunds_app_succeeded_at_idx ON refunds (app, succeeded_at) WHERE status = 'succeeded';

-- +goose Down
DROP INDEX refunds_app_succeeded_at_idx;
DROP INDEX orders_app_paid_at_idx;
DROP TABLE reconciliation_discrepancies;
DROP TABLE reconciliation_runs;
