package accesstoken

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/seal"
)

// DefaultMargin is how long before its expiry a token is refreshed.
const DefaultMargin = 5 * time.Minute

// SealPurpose is the internal/seal purpose access tokens are sealed with at
// rest; the app id is the associated data.
const SealPurpose = "minigate access_token v1"

// Queries, named entity-first.
const (
	// AccessTokenGet reads an app's stored (sealed) token without locking.
	AccessTokenGet = `SELECT token_sealed, expires_at FROM access_tokens WHERE app = $1`

	// AccessTokenEnsure creates an app's row so that it can be locked.
	AccessTokenEnsure = `INSERT INTO access_tokens (app, updated_at) VALUES ($1, $2) ON CONFLICT (app) DO NOTHING`

	// AccessTokenGetForUpdate reads and locks an app's row for the rest of
	// the transaction: the refresh lock shared by every instance.
	AccessTokenGetForUpdate = `SELECT token_sealed, expires_at FROM access_tokens WHERE app = $1 FOR UPDATE`

	// AccessTokenStore saves a freshly fetched token, sealed.
	AccessTokenStore = `UPDATE access_tokens
	SET token_sealed = $2, expires_at = $3, fetch_count = fetch_count + 1, updated_at = $4
	WHERE app = $1`
)

// Options configure NewManager.
type Options struct {
	// SecretKey is the configured secret_key; tokens are sealed at rest
	// with a key derived from it (SealPurpose). Required.
	SecretKey string
	// Margin is how long before expiry a token is refreshed; zero means
	// DefaultMargin.
	Margin time.Duration
	// Now is the clock; nil means time.Now. Use the clock the fetchers use
	// to compute expiry.
	Now func() time.Time
	// Logger receives refresh events (never token values).
	Logger *slog.Logger
}

// Manager hands out access tokens stored in Postgres and shared by every
// instance that uses the same database.
//
// Token returns the stored token while it is valid for longer than the
// margin. Otherwise one instance refreshes it: the refresher locks the
// app's row (SELECT … FOR UPDATE), checks again — another instance may have
// refreshed meanwhile — and only then calls the platform, storing the result
// before the lock is released. Within one process, callers of one Source
// wait for each other first, so a burst of callers makes at most one
// database round trip and one fetch.
type Manager struct {
	db     *sqlx.DB
	sealer *seal.Sealer
	margin time.Duration
	now    func() time.Time
	log    *slog.Logger
}

// NewManager returns a Manager on pool.
func NewManager(pool *sqlx.DB, opts Options) (*Manager, error) {
	sealer, err := seal.New(opts.SecretKey, SealPurpose)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: %w", err)
	}
	m := &Manager{db: pool, sealer: sealer, margin: opts.Margin, now: opts.Now, log: opts.Logger}
	if m.margin <= 0 {
		m.margin = DefaultMargin
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	return m, nil
}

// Source returns the token source of app, fetching from the platform with
// f. Create one Source per app and share it: each keeps an in-process copy
// of the token and a lock that makes its callers wait for one refresh.
func (m *Manager) Source(app string, f Fetcher) adapters.TokenSource {
	return &source{m: m, app: app, f: f, sem: make(chan struct{}, 1)}
}

// source is one app's token source.
type source struct {
	m   *Manager
	app string
	f   Fetcher
	// sem serializes this process's refreshes (and guards cached); a
	// channel rather than a mutex so that waiting respects ctx.
	sem    chan struct{}
	cached Token
}

func (s *source) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("accesstoken: %s: %w", s.app, ctx.Err())
	}
}

func (s *source) unlock() { <-s.sem }

// fresh reports whether t is usable for longer than the margin.
func (s *source) fresh(t Token) bool {
	return t.Value != "" && t.ExpiresAt.Sub(s.m.now()) > s.m.margin
}

// Token implements adapters.TokenSource.
func (s *source) Token(ctx context.Context) (string, error) {
	if err := s.lock(ctx); err != nil {
		return "", err
	}
	defer s.unlock()
	if s.fresh(s.cached) {
		return s.cached.Value, nil
	}
	stored, err := s.load(ctx)
	if err != nil {
		return "", err
	}
	if s.fresh(stored) {
		s.cached = stored
		return stored.Value, nil
	}
	tok, err := s.refresh(ctx, func(cur Token) (bool, bool) { return s.fresh(cur), false })
	if err != nil {
		return "", err
	}
	return tok.Value, nil
}

// Refresh implements adapters.TokenSource: when the stored token is still
// stale, it fetches a new one with force set; when it is another token
// (someone already refreshed), it returns that one.
func (s *source) Refresh(ctx context.Context, stale string) (string, error) {
	if err := s.lock(ctx); err != nil {
		return "", err
	}
	defer s.unlock()
	if s.cached.Value != stale && s.fresh(s.cached) {
		return s.cached.Value, nil
	}
	tok, err := s.refresh(ctx, func(cur Token) (bool, bool) {
		if cur.Value == stale {
			return false, true
		}
		return s.fresh(cur), false
	})
	if err != nil {
		return "", err
	}
	return tok.Value, nil
}

func (s *source) load(ctx context.Context) (Token, error) {
	var row tokenRow
	err := sqlx.GetContext(ctx, s.m.db, &row, AccessTokenGet, s.app)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, nil
	}
	if err != nil {
		return Token{}, fmt.Errorf("accesstoken: %s: load: %w", s.app, err)
	}
	return s.open(row), nil
}

type tokenRow struct {
	Sealed    []byte       `db:"token_sealed"`
	ExpiresAt sql.NullTime `db:"expires_at"`
}

// open unseals a stored token. One that does not open (secret_key was
// changed) counts as none: it is fetched again.
func (s *source) open(r tokenRow) Token {
	if r.Sealed == nil {
		return Token{}
	}
	v, err := s.m.sealer.Open(r.Sealed, []byte(s.app))
	if err != nil {
		s.m.log.Warn("stored access token does not open (was secret_key changed?); fetching a new one", "app", s.app)
		return Token{}
	}
	return Token{Value: string(v), ExpiresAt: r.ExpiresAt.Time}
}

// refresh locks the app's row and asks decide whether the stored token can
// be used as it is and, if not, whether to force a new one; it fetches and
// stores when needed. It updates the in-process copy.
func (s *source) refresh(ctx context.Context, decide func(current Token) (use, force bool)) (Token, error) {
	var out Token
	fetched, forced := false, false
	err := db.InTx(ctx, s.m.db, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, AccessTokenEnsure, s.app, s.m.now()); err != nil {
			return fmt.Errorf("accesstoken: %s: ensure row: %w", s.app, err)
		}
		var row tokenRow
		if err := sqlx.GetContext(ctx, tx, &row, AccessTokenGetForUpdate, s.app); err != nil {
			return fmt.Errorf("accesstoken: %s: lock: %w", s.app, err)
		}
		cur := s.open(row)
		use, force := decide(cur)
		if use {
			out = cur
			return nil
		}
		tok, err := s.f.FetchAccessToken(ctx, force)
		if err != nil {
			return fmt.Errorf("accesstoken: %s: fetch: %w", s.app, err)
		}
		if tok.Value == "" || !tok.ExpiresAt.After(s.m.now()) {
			return fmt.Errorf("accesstoken: %s: fetch returned an empty or expired token", s.app)
		}
		sealed := s.m.sealer.Seal([]byte(tok.Value), []byte(s.app))
		if _, err := tx.ExecContext(ctx, AccessTokenStore, s.app, sealed, tok.ExpiresAt, s.m.now()); err != nil {
			return fmt.Errorf("accesstoken: %s: store: %w", s.app, err)
		}
		out, fetched, forced = tok, true, force
		return nil
	})
	if err != nil {
		return Token{}, err
	}
	if fetched {
		s.m.log.InfoContext(ctx, "access token refreshed", "app", s.app, "force", forced, "expires_at", out.ExpiresAt)
	}
	s.cached = out
	return out, nil
}
