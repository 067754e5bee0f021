package db

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"testing/fstest"
)

// scratchDB creates an empty database for an in-package test (pgtest
// imports this package, so it cannot be used here) and drops it after.
func scratchDB(t *testing.T) string {
	t.Helper()
	server := os.Getenv("DATABASE_URL")
	if server == "" {
		server = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	admin, err := Open(context.Background(), server)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "minigate_t_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// TestMigrationsLandOutOfOrder: numbers are reserved per area, so a
// migration with a lower number can land after a higher one has been
// applied; it must still be applied, not refused as "missing".
func TestMigrationsLandOutOfOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := Open(ctx, scratchDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	mig := func(table string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE " + table + " (id int);\n-- +goose Down\nDROP TABLE " + table + ";\n")}
	}
	first := fstest.MapFS{"09001_a.sql": mig("ooo_a"), "09003_c.sql": mig("ooo_c")}
	p, err := providerFS(pool.DB, first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	later := fstest.MapFS{"09001_a.sql": mig("ooo_a"), "09002_b.sql": mig("ooo_b"), "09003_c.sql": mig("ooo_c")}
	p, err = providerFS(pool.DB, later)
	if err != nil {
		t.Fatal(err)
	}
	pending, err := p.HasPending(ctx)
	if err != nil || !pending {
		t.Fatalf("HasPending = %v, %v; want true (09002 not applied)", pending, err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		t.Fatalf("a lower-numbered migration landing later was refused: %v", err)
	}
	if len(res) != 1 || res[0].Source.Version != 9002 {
		t.Fatalf("applied %v, want 09002 only", res)
	}
	var n int
	if err := pool.Get(&n, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'ooo_b'`); err != nil || n != 1 {
		t.Fatalf("ooo_b exists = %d, %v", n, err)
	}
}
