package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/money"
	"github.com/minigate/minigate/orders"
)

// App is one app as reconciliation needs it.
type App struct {
	ID       string
	Platform string
	// Bills downloads the app's daily bill; nil when the app has no
	// merchant account.
	Bills BillSource
	// Payments answers the queries that confirm what a bill says.
	Payments orders.Payments
}

// Ledger is what reconciliation needs from the orders service
// (implemented by *orders.Service).
type Ledger interface {
	PaidBetween(ctx context.Context, app string, from, to time.Time) ([]orders.Order, error)
	ByOutTradeNo(ctx context.Context, app string, nos []string) (map[string]*orders.Order, error)
	RefundsSucceededBetween(ctx context.Context, app string, from, to time.Time) ([]orders.RefundOfOrder, error)
	RefundsByOutRefundNo(ctx context.Context, app string, nos []string) (map[string]*orders.RefundOfOrder, error)
	ApplyReconciled(ctx context.Context, app string, t orders.Transaction) (*orders.Order, error)
	ApplyReconciledRefund(ctx context.Context, app string, r orders.Refund) error
	FlagReconciled(ctx context.Context, orderID, reason string, detail map[string]any) (bool, error)
}

// Trigger says what started a run.
type Trigger string

// Triggers.
const (
	TriggerCLI      Trigger = "cli"
	TriggerAPI      Trigger = "api"
	TriggerSchedule Trigger = "schedule"
)

// Status is a run's outcome.
type Status string

// Run outcomes.
const (
	StatusMatched       Status = "matched"
	StatusDiscrepancies Status = "discrepancies"
)

// Options configure New.
type Options struct {
	Apps   []App
	Ledger Ledger
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Service runs reconciliations and keeps their reports.
type Service struct {
	db     *sqlx.DB
	apps   map[string]*App
	ledger Ledger
	now    func() time.Time
	log    *slog.Logger
}

// New returns a Service storing into pool.
func New(pool *sqlx.DB, opts Options) (*Service, error) {
	if pool == nil || opts.Ledger == nil {
		return nil, errors.New("reconcile: New needs a pool and a Ledger")
	}
	s := &Service{db: pool, apps: make(map[string]*App, len(opts.Apps)), ledger: opts.Ledger, now: opts.Now, log: opts.Logger}
	for i := range opts.Apps {
		a := opts.Apps[i]
		if _, dup := s.apps[a.ID]; dup || a.ID == "" {
			return nil, fmt.Errorf("reconcile: app id %q missing or duplicated", a.ID)
		}
		s.apps[a.ID] = &a
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// API errors.
var (
	errAppNotFound  = apperr.New(apperr.NotFound, "app_not_found", "no such app")
	errNoBills      = apperr.New(apperr.Unsupported, "payments_not_configured", "this app has no merchant account, so no bills")
	errRunNotFound  = apperr.New(apperr.NotFound, "reconciliation_not_found", "no such reconciliation")
	errFutureDate   = apperr.New(apperr.Invalid, "invalid_date", "the day has not begun yet in Asia/Shanghai")
	errBillNotReady = apperr.New(apperr.Conflict, "bill_not_ready", "the platform has not generated this day's bill yet")
)

// Billed returns the ids of the apps that have bills, sorted.
func (s *Service) Billed() []string {
	var out []string
	for id, a := range s.apps {
		if a.Bills != nil {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Run reconciles app's bill for date: it downloads the bill, compares it
// with the books, acts on what differs, stores the run (with its diff to
// the previous run of the same app and day) and returns the report. A bill
// not ready yet is a 409 bill_not_ready *apperr.Error wrapping the
// *NotReadyError; nothing is stored then.
func (s *Service) Run(ctx context.Context, appID string, date Date, trigger Trigger) (*Report, error) {
	a, ok := s.apps[appID]
	if !ok {
		return nil, errAppNotFound
	}
	if a.Bills == nil {
		return nil, errNoBills
	}
	started := s.now()
	if date.Start().After(started) {
		return nil, errFutureDate
	}
	bill, err := a.Bills.DownloadBill(ctx, date)
	if err != nil {
		var nr *NotReadyError
		if errors.As(err, &nr) {
			e := errBillNotReady.WithCause(err).WithDetail("retry_after", nr.RetryAt.In(Zone).Format(time.RFC3339))
			e.Message = nr.Error()
			e.RetryAfter = max(nr.RetryAt.Sub(started).Round(time.Second), time.Second)
			return nil, e
		}
		return nil, fmt.Errorf("reconcile: %s %s: download bill: %w", appID, date, adapters.ToAppError(err))
	}
	books, err := s.books(ctx, a.ID, date, bill)
	if err != nil {
		return nil, err
	}
	totals, discs := Match(bill, books)
	if discs == nil {
		discs = []Discrepancy{} // a list, as GET /v1/reconciliations/{id} gives it
	}
	for i := range discs {
		s.act(ctx, a, &discs[i])
	}
	rep := &Report{
		App: a.ID, Platform: a.Platform, Date: date, Status: StatusMatched, Trigger: trigger,
		StartedAt: started, FinishedAt: s.now(), Totals: totals, Discrepancies: discs,
	}
	if len(discs) > 0 {
		rep.Status = StatusDiscrepancies
	}
	if err := s.save(ctx, rep); err != nil {
		return nil, err
	}
	s.log.Info("reconcile: run", "run_id", rep.ID, "app", a.ID, "date", date.String(), "trigger", string(trigger),
		"status", string(rep.Status), "matched", totals.Matched, "discrepancies", len(discs))
	return rep, nil
}

// books loads what the bill is compared with: the day's paid orders and
// succeeded refunds, and every order and refund the bill names.
func (s *Service) books(ctx context.Context, app string, date Date, bill *Bill) (Books, error) {
	var (
		b   Books
		err error
	)
	if b.Paid, err = s.ledger.PaidBetween(ctx, app, date.Start(), date.End()); err != nil {
		return b, fmt.Errorf("reconcile: %w", err)
	}
	if b.Refunds, err = s.ledger.RefundsSucceededBetween(ctx, app, date.Start(), date.End()); err != nil {
		return b, fmt.Errorf("reconcile: %w", err)
	}
	var tradeNos, refundNos []string
	for _, r := range bill.Rows {
		tradeNos = append(tradeNos, r.OutTradeNo)
		if r.Kind == KindRefund {
			refundNos = append(refundNos, r.OutRefundNo)
		}
	}
	if b.Orders, err = s.ledger.ByOutTradeNo(ctx, app, tradeNos); err != nil {
		return b, fmt.Errorf("reconcile: %w", err)
	}
	if b.RefundsByNo, err = s.ledger.RefundsByOutRefundNo(ctx, app, refundNos); err != nil {
		return b, fmt.Errorf("reconcile: %w", err)
	}
	return b, nil
}

// act decides and does what can be done about d, and says so in d.Action
// and d.Note. Failures of platform queries do not fail the run: they are
// noted, and the next run tries again.
func (s *Service) act(ctx context.Context, a *App, d *Discrepancy) {
	d.Action = ActionNone
	switch d.Subject {
	case SubjectPayment:
		s.actPayment(ctx, a, d)
	case SubjectRefund:
		s.actRefund(ctx, a, d)
	}
}

func (s *Service) actPayment(ctx context.Context, a *App, d *Discrepancy) {
	switch d.Kind {
	case MissingLocal, StatusMismatch:
		if d.OrderID == "" {
			d.Note = "minigate has no order with this out_trade_no (paid outside minigate?)"
			return
		}
		s.confirmPayment(ctx, a, d)
	case AmountMismatch:
		s.flag(ctx, d, "bill_amount_mismatch", fmt.Sprintf("the bill says %s, the order %s", yuanOf(d.BillAmount), yuanOf(d.LocalAmount)))
	case MissingPlatform:
		t, err := a.Payments.Query(ctx, d.OutTradeNo)
		switch {
		case err == nil && (t.State == orders.PaymentPaid || t.State == orders.PaymentRefunded):
			d.Note = "the platform's query confirms the payment (transaction " + t.TransactionID + "); the bill leaves it out"
		case adapters.HasReason(err, adapters.ReasonNotFound):
			s.flag(ctx, d, "missing_from_bill", "the platform does not know the order")
		case err != nil:
			d.Note = "the bill leaves it out; the platform's query failed (" + reasonOf(err) + "); run again to check"
		default:
			s.flag(ctx, d, "missing_from_bill", "the platform's query says "+string(t.State))
		}
	}
}

// confirmPayment asks the platform about an order the bill shows paid and
// applies the answer (source reconcile): an unpaid order moves to paid; a
// closed or failed one, or an answer that disagrees with the order, is
// flagged by the orders service.
func (s *Service) confirmPayment(ctx context.Context, a *App, d *Discrepancy) {
	t, err := a.Payments.Query(ctx, d.OutTradeNo)
	switch {
	case adapters.HasReason(err, adapters.ReasonNotFound):
		d.Note = "the platform's query does not know the order; left as it is"
		return
	case err != nil:
		d.Note = "the platform's query failed (" + reasonOf(err) + "); run again to retry"
		return
	case t.State != orders.PaymentPaid && t.State != orders.PaymentRefunded:
		d.Note = "the platform's query says " + string(t.State) + "; left as it is"
		return
	}
	o, err := s.ledger.ApplyReconciled(ctx, a.ID, t)
	if err != nil {
		s.log.Warn("reconcile: applying a confirmed payment failed", "app", a.ID, "order_id", d.OrderID, "err", err)
		d.Note = "applying the platform's answer failed; run again to retry"
		return
	}
	switch {
	case d.Kind == MissingLocal && o.Status.PaidOrLater():
		d.Action = ActionRecovered
		d.Note = fmt.Sprintf("the platform's query confirms it (transaction %s): moved %s → %s (source reconcile)",
			t.TransactionID, d.LocalStatus, o.Status)
	case o.NeedsReview:
		d.Action = ActionFlagged
		d.Note = "the platform's query says " + string(t.State) + "; order flagged for review"
	default:
		d.Note = "the platform's query says " + string(t.State) + "; the order is " + string(o.Status)
	}
}

func (s *Service) actRefund(ctx context.Context, a *App, d *Discrepancy) {
	switch {
	case d.Kind == MissingLocal && d.LocalStatus == string(orders.RefundStatusPending):
		s.confirmRefund(ctx, a, d)
	case d.Kind == MissingLocal && d.OrderID == "":
		if d.Note == "" {
			d.Note = "minigate has no order with this out_trade_no"
		}
	case d.Kind == MissingLocal || d.Kind == StatusMismatch:
		// A refund minigate did not make, or one it saw fail: the orders
		// service flags the order (unknown_refund, refund_succeeded_after_failure).
		r := d.row
		err := s.ledger.ApplyReconciledRefund(ctx, a.ID, orders.Refund{
			OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID, OutRefundNo: r.OutRefundNo,
			RefundID: r.RefundID, State: orders.RefundSucceeded, Amount: r.Amount, SucceededAt: r.Time,
		})
		if err != nil {
			s.log.Warn("reconcile: flagging a refund failed", "app", a.ID, "order_id", d.OrderID, "err", err)
			d.Note = "flagging the order failed; run again to retry"
			return
		}
		d.Action = ActionFlagged
		if d.Kind == MissingLocal && d.Note == "" {
			d.Note = "a refund minigate did not make (merchant console?); order flagged for review"
		} else if d.Kind == StatusMismatch {
			d.Note = "minigate saw this refund fail; order flagged for review"
		}
	case d.Kind == AmountMismatch:
		s.flag(ctx, d, "refund_amount_mismatch", fmt.Sprintf("the bill says %s, the refund %s", yuanOf(d.BillAmount), yuanOf(d.LocalAmount)))
	case d.Kind == MissingPlatform:
		r, err := a.Payments.QueryRefund(ctx, d.OutTradeNo, d.OutRefundNo)
		switch {
		case err == nil && r.State == orders.RefundSucceeded:
			d.Note = "the platform's refund query confirms it; the bill leaves it out"
		case err != nil && !adapters.HasReason(err, adapters.ReasonNotFound):
			d.Note = "the bill leaves it out; the platform's refund query failed (" + reasonOf(err) + "); run again to check"
		default:
			s.flag(ctx, d, "refund_missing_from_bill", "the platform does not confirm the refund")
		}
	}
}

// confirmRefund asks the platform about a refund minigate still has
// pending and applies the answer (source reconcile).
func (s *Service) confirmRefund(ctx context.Context, a *App, d *Discrepancy) {
	r, err := a.Payments.QueryRefund(ctx, d.OutTradeNo, d.OutRefundNo)
	switch {
	case err != nil:
		d.Note = "the platform's refund query failed (" + reasonOf(err) + "); run again to retry"
		return
	case r.State != orders.RefundSucceeded:
		d.Note = "the platform's refund query says " + string(r.State) + "; left pending"
		return
	}
	if err := s.ledger.ApplyReconciledRefund(ctx, a.ID, r); err != nil {
		s.log.Warn("reconcile: applying a confirmed refund failed", "app", a.ID, "order_id", d.OrderID, "err", err)
		d.Note = "applying the platform's answer failed; run again to retry"
		return
	}
	now, err := s.ledger.RefundsByOutRefundNo(ctx, a.ID, []string{d.OutRefundNo})
	if err == nil && now[d.OutRefundNo] != nil && now[d.OutRefundNo].Status == orders.RefundStatusSucceeded {
		d.Action = ActionRecovered
		d.Note = "the platform's refund query confirms it: refund succeeded (source reconcile)"
		return
	}
	d.Action = ActionFlagged
	d.Note = "the platform's refund query disagrees with the refund; order flagged for review"
}

// flag flags d's order for review, with why.
func (s *Service) flag(ctx context.Context, d *Discrepancy, reason, why string) {
	if d.OrderID == "" {
		d.Note = why
		return
	}
	detail := map[string]any{"out_trade_no": d.OutTradeNo, "kind": string(d.Kind), "why": why}
	if d.OutRefundNo != "" {
		detail["out_refund_no"] = d.OutRefundNo
	}
	flagged, err := s.ledger.FlagReconciled(ctx, d.OrderID, reason, detail)
	if err != nil {
		s.log.Warn("reconcile: flagging failed", "order_id", d.OrderID, "err", err)
		d.Note = why + "; flagging the order failed"
		return
	}
	d.Action = ActionFlagged
	if flagged {
		d.Note = why + "; order flagged for review"
	} else {
		d.Note = why + "; order already flagged for review"
	}
}

// reasonOf names a failure without details that could carry secrets.
func reasonOf(err error) string {
	if pe, ok := adapters.AsPlatformError(err); ok {
		return strings.TrimSpace(string(pe.Reason) + " " + pe.Code)
	}
	return "error"
}

func yuanOf(v *int64) string {
	if v == nil {
		return "—"
	}
	return "¥" + money.FormatYuan(*v)
}

// Get returns a stored run's report.
func (s *Service) Get(ctx context.Context, id string) (*Report, error) {
	rep, err := loadRun(ctx, s.db, id)
	if errors.Is(err, errNoRun) {
		return nil, errRunNotFound
	}
	return rep, err
}
