// Package pgtest gives each test its own migrated Postgres database.
//
// The server is DATABASE_URL when set, else postgres@127.0.0.1:5432. A
// template database holding the current schema (goose and River migrations)
// is built once per schema version, under an advisory lock so that parallel
// test binaries build it once; each test then gets a fresh copy with
// CREATE DATABASE … TEMPLATE, dropped when the test ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/db"
	schema "github.com/minigate/minigate/sql"
)

// DefaultURL is used when DATABASE_URL is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// templateLockKey serializes template creation across processes.
const templateLockKey = 0x6d67746d706c // "mgtmpl"

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// ServerURL is the URL of the server tests use.
func ServerURL() string {
	if v := os.Getenv("DATABASE_URL"); v != "" {
		return v
	}
	return DefaultURL
}

// withDatabase returns server URL u pointing at database name.
func withDatabase(u, name string) (string, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("pgtest: DATABASE_URL: %w", err)
	}
	parsed.Path = "/" + name
	q := parsed.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
		parsed.RawQuery = q.Encode()
	}
	return parsed.String(), nil
}

// New returns a pool on a fresh, migrated database for t. The database is
// dropped when the test ends.
func New(t testing.TB) *sqlx.DB {
	t.Helper()
	u := NewURL(t)
	pool, err := db.Open(context.Background(), u)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { pool.Close() })
	return pool
}

// NewURL is New for tests that open their own pools (or start processes):
// it returns the fresh database's URL.
func NewURL(t testing.TB) string {
	t.Helper()
	tmpl, err := template()
	if err != nil {
		t.Fatalf("pgtest: template: %v", err)
	}
	admin, err := db.Open(context.Background(), ServerURL())
	if err != nil {
		t.Fatalf("pgtest: %v (is Postgres running? `make test` starts one)", err)
	}
	defer admin.Close()
	name := "minigate_t_" + randomHex(6)
	var createErr error
	for attempt := 0; attempt < 20; attempt++ {
		_, createErr = admin.Exec(fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, name, tmpl))
		if createErr == nil || !strings.Contains(createErr.Error(), "is being accessed by other users") {
			break
		}
		time.Sleep(time.Duration(50+attempt*25) * time.Millisecond)
	}
	if createErr != nil {
		t.Fatalf("pgtest: create database: %v", createErr)
	}
	t.Cleanup(func() { Drop(name) })
	u, err := withDatabase(ServerURL(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// NewEmptyURL returns the URL of a fresh database with no schema at all (a
// copy of template0), as a newcomer's first `make run` finds, dropped when
// the test ends.
func NewEmptyURL(t testing.TB) string {
	t.Helper()
	admin, err := db.Open(context.Background(), ServerURL())
	if err != nil {
		t.Fatalf("pgtest: %v (is Postgres running? `make test` starts one)", err)
	}
	defer admin.Close()
	name := "minigate_t_" + randomHex(6)
	if _, err := admin.Exec(fmt.Sprintf(`CREATE DATABASE %s TEMPLATE template0`, name)); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() { Drop(name) })
	u, err := withDatabase(ServerURL(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Drop removes a test database, disconnecting its sessions.
func Drop(name string) {
	admin, err := db.Open(context.Background(), ServerURL())
	if err != nil {
		return
	}
	defer admin.Close()
	_, _ = admin.Exec(fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name))
}

func template() (string, error) {
	templateOnce.Do(func() { templateName, templateErr = buildTemplate() })
	return templateName, templateErr
}

// schemaHash identifies the schema: the migration files' names and contents.
func schemaHash() (string, error) {
	names, err := fs.Glob(schema.FS, "*.sql")
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := fs.ReadFile(schema.FS, n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func buildTemplate() (string, error) {
	hash, err := schemaHash()
	if err != nil {
		return "", err
	}
	name := "minigate_tmpl_" + hash
	ctx := context.Background()
	admin, err := db.Open(ctx, ServerURL())
	if err != nil {
		return "", fmt.Errorf("%w (is Postgres running? `make test` starts one)", err)
	}
	defer admin.Close()
	conn, err := admin.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(templateLockKey)); err != nil {
		return "", err
	}
	defer conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, int64(templateLockKey)) //nolint:errcheck // released with the connection

	var exists bool
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_b" + randomHex(3)
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`CREATE DATABASE %s`, building)); err != nil {
		return "", err
	}
	u, err := withDatabase(ServerURL(), building)
	if err != nil {
		return "", err
	}
	pool, err := db.Open(ctx, u)
	if err != nil {
		return "", err
	}
	_, merr := db.Migrate(ctx, pool.DB)
	pool.Close()
	if merr != nil {
		Drop(building)
		return "", merr
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`ALTER DATABASE %s RENAME TO %s`, building, name)); err != nil {
		Drop(building)
		return "", err
	}
	return name, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Blackhole returns the address of a server that accepts connections and
// never answers, like a database behind a blackhole: the TCP handshake
// succeeds, nothing else does. It closes with the test.
func Blackhole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}
