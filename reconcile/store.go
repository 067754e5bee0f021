package reconcile

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/ids"
)

// errNoRun is returned by loadRun for an unknown id.
var errNoRun = errors.New("reconcile: no such run")

// RunLock serializes the runs of one app and day while one is stored, so
// each finds the one before it.
const RunLock = `SELECT pg_advisory_xact_lock(hashtext($1))`

// RunLatestID finds the latest stored run of an app and day.
const RunLatestID = `
SELECT id FROM reconciliation_runs WHERE app = $1 AND bill_date = $2::date
ORDER BY finished_at DESC, id DESC LIMIT 1`

// RunInsert stores a run.
const RunInsert = `
INSERT INTO reconciliation_runs (id, app, platform, bill_date, status, triggered_by, matched,
	discrepancy_count, totals, previous_run_id, diff, started_at, finished_at)
VALUES ($1, $2, $3, $4::date, $5, $6, $7, $8, $9, $10, $11, $12, $13)`

// RunGet reads a run.
const RunGet = `
SELECT id, app, platform, bill_date::text AS bill_date, status, triggered_by, totals, previous_run_id, diff,
	started_at, finished_at
FROM reconciliation_runs WHERE id = $1`

// DiscrepancyInsert stores one of a run's discrepancies.
const DiscrepancyInsert = `
INSERT INTO reconciliation_discrepancies (run_id, position, kind, subject, out_trade_no, out_refund_no,
	transaction_id, order_id, field, bill_amount, local_amount, bill_status, local_status, action, note)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`

// DiscrepancyList reads a run's discrepancies in order.
const DiscrepancyList = `
SELECT kind, subject, out_trade_no, out_refund_no, transaction_id, order_id, field, bill_amount, local_amount,
	bill_status, local_status, action, note
FROM reconciliation_discrepancies WHERE run_id = $1 ORDER BY position`

// save stores rep as a new run, with its diff to the latest earlier run of
// the same app and day, and sets rep.ID, rep.PreviousRunID and rep.Diff.
func (s *Service) save(ctx context.Context, rep *Report) error {
	rep.ID = ids.New("rec")
	totals, err := json.Marshal(rep.Totals)
	if err != nil {
		return fmt.Errorf("reconcile: encode totals: %w", err)
	}
	err = db.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		date := rep.Date.String()
		if _, err := tx.ExecContext(ctx, RunLock, "reconcile:"+rep.App+":"+date); err != nil {
			return err
		}
		var prev string
		err := sqlx.GetContext(ctx, tx, &prev, RunLatestID, rep.App, date)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var diff []byte
		if prev != "" {
			before, err := listDiscrepancies(ctx, tx, prev)
			if err != nil {
				return err
			}
			d := diffRuns(before, rep.Discrepancies)
			rep.PreviousRunID, rep.Diff = &prev, &d
			if diff, err = json.Marshal(d); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, RunInsert, rep.ID, rep.App, rep.Platform, date, string(rep.Status),
			string(rep.Trigger), rep.Totals.Matched, len(rep.Discrepancies), string(totals), rep.PreviousRunID, nullJSON(diff),
			rep.StartedAt, rep.FinishedAt); err != nil {
			return err
		}
		for i, d := range rep.Discrepancies {
			if _, err := tx.ExecContext(ctx, DiscrepancyInsert, rep.ID, i, string(d.Kind), string(d.Subject),
				d.OutTradeNo, d.OutRefundNo, d.TransactionID, d.OrderID, d.Field, d.BillAmount, d.LocalAmount,
				d.BillStatus, d.LocalStatus, string(d.Action), d.Note); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reconcile: store run: %w", err)
	}
	return nil
}

// diffRuns compares a run's discrepancies with the previous run's.
func diffRuns(before, after []Discrepancy) Diff {
	old := make(map[Key]bool, len(before))
	for i := range before {
		old[before[i].Key()] = true
	}
	d := Diff{New: []Key{}, Resolved: []Key{}}
	seen := make(map[Key]bool, len(after))
	for i := range after {
		k := after[i].Key()
		seen[k] = true
		if old[k] {
			d.Unchanged++
		} else {
			d.New = append(d.New, k)
		}
	}
	for i := range before {
		if k := before[i].Key(); !seen[k] {
			d.Resolved = append(d.Resolved, k)
		}
	}
	return d
}

func listDiscrepancies(ctx context.Context, ex sqlx.QueryerContext, runID string) ([]Discrepancy, error) {
	out := []Discrepancy{}
	if err := sqlx.SelectContext(ctx, ex, &out, DiscrepancyList, runID); err != nil {
		return nil, fmt.Errorf("reconcile: list discrepancies: %w", err)
	}
	return out, nil
}

// runRow is a stored run.
type runRow struct {
	ID            string          `db:"id"`
	App           string          `db:"app"`
	Platform      string          `db:"platform"`
	BillDate      string          `db:"bill_date"`
	Status        string          `db:"status"`
	TriggeredBy   string          `db:"triggered_by"`
	Totals        json.RawMessage `db:"totals"`
	PreviousRunID *string         `db:"previous_run_id"`
	Diff          []byte          `db:"diff"`
	StartedAt     time.Time       `db:"started_at"`
	FinishedAt    time.Time       `db:"finished_at"`
}

func loadRun(ctx context.Context, ex sqlx.QueryerContext, id string) (*Report, error) {
	var r runRow
	err := sqlx.GetContext(ctx, ex, &r, RunGet, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoRun
	}
	if err != nil {
		return nil, fmt.Errorf("reconcile: get run: %w", err)
	}
	date, err := ParseDate(r.BillDate)
	if err != nil {
		return nil, err
	}
	rep := &Report{
		ID: r.ID, App: r.App, Platform: r.Platform, Date: date, Status: Status(r.Status), Trigger: Trigger(r.TriggeredBy),
		PreviousRunID: r.PreviousRunID, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
	}
	if err := json.Unmarshal(r.Totals, &rep.Totals); err != nil {
		return nil, fmt.Errorf("reconcile: decode totals: %w", err)
	}
	if r.Diff != nil {
		rep.Diff = &Diff{}
		if err := json.Unmarshal(r.Diff, rep.Diff); err != nil {
			return nil, fmt.Errorf("reconcile: decode diff: %w", err)
		}
	}
	if rep.Discrepancies, err = listDiscrepancies(ctx, ex, r.ID); err != nil {
		return nil, err
	}
	return rep, nil
}

// nullJSON passes b as JSON text, or NULL when empty.
func nullJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}
