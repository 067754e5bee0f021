// Package db opens minigate's Postgres pool and applies its schema: goose
// migrations from the sql package and River's own migrations, under one
// advisory lock so that several instances starting together migrate once.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/rivermigrate"

	schema "github.com/minigate/minigate/sql"
)

// migrateLockKey is the advisory lock held while migrating ("minigate" in ASCII).
const migrateLockKey = 0x6d696e6967617465

// Connection settings Open applies unless the database URL sets them.
const (
	// DefaultConnectTimeout bounds establishing a connection (TCP, TLS and
	// the startup exchange). Without it lib/pq waits for ever on a server
	// that accepts connections and then says nothing.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultIdleInTransactionTimeout makes the server end a transaction
	// left idle this long. A client that vanished mid-transaction (killed,
	// partitioned) would otherwise keep its row locks — an order locked FOR
	// UPDATE, an access-token refresh — until the server's TCP keepalive
	// notices, which takes hours with the usual kernel settings. No
	// transaction of minigate's waits this long between statements.
	DefaultIdleInTransactionTimeout = time.Minute
)

// Connector returns a lib/pq connector for url with minigate's connection
// defaults (DefaultConnectTimeout as connect_timeout,
// DefaultIdleInTransactionTimeout as idle_in_transaction_session_timeout)
// where url does not set them.
func Connector(url string) (*pq.Connector, error) {
	cfg, err := pq.NewConfig(url)
	if err != nil {
		return nil, fmt.Errorf("db: database URL: %w", err)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Runtime == nil {
		cfg.Runtime = map[string]string{}
	}
	if _, set := cfg.Runtime["idle_in_transaction_session_timeout"]; !set {
		cfg.Runtime["idle_in_transaction_session_timeout"] = strconv.FormatInt(DefaultIdleInTransactionTimeout.Milliseconds(), 10)
	}
	c, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("db: database URL: %w", err)
	}
	return c, nil
}

// MaxConns bounds each pool's connections, and so the transactions an
// instance runs at once (River's workers share the pool). Postgres commits
// most per second with a few concurrent transactions per core; beyond
// that they queue for locks and the WAL flush inside the server, where no
// deadline reaches them. Measured on 2 cores: the database ceiling peaks
// at 8–16 concurrent transactions, and going from 40 connections to 16
// raised payment-notification throughput by a fifth to a third and halved
// the message-push ack p99 (docs/benchmarks.md). Requests beyond it wait for a
// connection, within the callback store timeout.
const MaxConns = 16

// Open connects to Postgres and checks the connection.
func Open(ctx context.Context, url string) (*sqlx.DB, error) {
	c, err := Connector(url)
	if err != nil {
		return nil, err
	}
	db := sqlx.NewDb(sql.OpenDB(c), "postgres")
	db.SetMaxOpenConns(MaxConns)
	db.SetMaxIdleConns(MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("db: connect: %w", err)
	}
	return db, nil
}

// provider is goose over the embedded migrations. Migration numbers are
// reserved per area (docs/architecture.md, rule 5), so work on different
// areas lands in any order: a database that already has a higher number
// still gets a lower one that landed later (out-of-order allowed).
func provider(db *sql.DB) (*goose.Provider, error) {
	return providerFS(db, schema.FS)
}

func providerFS(db *sql.DB, fsys fs.FS) (*goose.Provider, error) {
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithAllowOutofOrder(true))
	if err != nil {
		return nil, fmt.Errorf("db: migrations: %w", err)
	}
	return p, nil
}

// Migrate applies pending goose and River migrations. It returns the names
// of the goose migrations it applied.
func Migrate(ctx context.Context, db *sql.DB) ([]string, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("db: migrate: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrateLockKey)); err != nil {
		return nil, fmt.Errorf("db: migrate: lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrateLockKey)) //nolint:errcheck // released with the connection anyway

	migrator, err := rivermigrate.New(riverdatabasesql.New(db), nil)
	if err != nil {
		return nil, fmt.Errorf("db: river migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("db: river migrations: %w", err)
	}
	p, err := provider(db)
	if err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("db: migrate: %w", err)
	}
	var applied []string
	for _, r := range results {
		applied = append(applied, r.Source.Path)
	}
	return applied, nil
}

// ErrSchemaBehind reports a database schema older than the code.
var ErrSchemaBehind = errors.New("db: schema is older than this build; run `minigate migrate`")

// CheckSchema returns ErrSchemaBehind when goose or River migrations are pending.
func CheckSchema(ctx context.Context, db *sql.DB) error {
	p, err := provider(db)
	if err != nil {
		return err
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("db: schema status: %w", err)
	}
	if pending {
		return ErrSchemaBehind
	}
	migrator, err := rivermigrate.New(riverdatabasesql.New(db), nil)
	if err != nil {
		return fmt.Errorf("db: river migrator: %w", err)
	}
	res, err := migrator.Validate(ctx, nil)
	if err != nil {
		return fmt.Errorf("db: river schema status: %w", err)
	}
	if !res.OK {
		return ErrSchemaBehind
	}
	return nil
}

// MigrationCount is the number of goose migrations in this build.
func MigrationCount() int {
	entries, _ := fs.Glob(schema.FS, "*.sql")
	return len(entries)
}

// ErrGaveUp is returned by Bounded when fn did not return in time.
var ErrGaveUp = errors.New("db: gave up waiting for the database")

// Bounded runs fn with a context that ends after d (or when ctx does) and
// returns when fn returns or that context ends, whichever comes first.
//
// Callers that must answer in time (callback replies, /readyz) need it
// because lib/pq does not interrupt a read when its context ends: it asks the
// server to cancel the statement, over a new connection, and keeps waiting
// for the answer. Against a slow server the cancel ends the wait; against an
// unreachable one (a network partition, a blackholed address) nothing comes
// back and the call blocks until TCP gives up, minutes later. Bounded then
// returns ErrGaveUp at the deadline and leaves fn running in the background
// with its context ended; its result is dropped. fn must therefore be safe to
// abandon: a transaction whose commit nobody is told about must be harmless
// (callbacks: the platform's retry finds the stored duplicate).
func Bounded[T any](ctx context.Context, d time.Duration, fn func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-done: // finished at the deadline: its answer stands
		return r.v, r.err
	default:
		var zero T
		return zero, fmt.Errorf("%w after %v: %w", ErrGaveUp, d, context.Cause(ctx))
	}
}

// InTx runs fn in a transaction, committing when fn returns nil.
func InTx(ctx context.Context, db *sqlx.DB, fn func(tx *sqlx.Tx) error) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("db: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("db: commit: %w", err)
	}
	return nil
}
