package pgtest

import (
	"testing"
)

func TestNewGivesIsolatedMigratedDatabases(t *testing.T) {
	t.Parallel()
	a, b := New(t), New(t)
	var nameA, nameB string
	if err := a.Get(&nameA, `SELECT current_database()`); err != nil {
		t.Fatal(err)
	}
	if err := b.Get(&nameB, `SELECT current_database()`); err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Fatalf("both tests got database %s", nameA)
	}
	var version int64
	if err := a.Get(&version, `SELECT max(version_id) FROM goose_db_version`); err != nil {
		t.Fatalf("goose table missing: %v", err)
	}
	if version < 1 {
		t.Fatalf("schema not migrated: version %d", version)
	}
	var riverTables int
	if err := a.Get(&riverTables, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'river_job'`); err != nil || riverTables != 1 {
		t.Fatalf("river_job missing: %v %d", err, riverTables)
	}
}
