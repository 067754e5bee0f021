package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Daily bills. Each platform's simulation renders the bill of a business
// day (Asia/Shanghai) from its own ledger in that platform's format
// (wechatpaybill.go, alipaybill.go, qpaybill.go); this file holds what they
// share: when a bill is ready, the divergences a test or a person asked
// for, short-lived download tokens, and the control routes.
//
// A day's bill is ready at 10:00 the next day by the simulator's clock,
// unless marked ready earlier (POST /sandbox/apps/{app}/bills/{date}/ready).
// It is rendered when requested, so it shows the ledger as it is then.

const (
	// billReadyHour is when, the next day, a day's bill becomes available.
	billReadyHour = 10
	// billTokenTTL is how long a download link works (WeChat Pay's and
	// Alipay's are short-lived too).
	billTokenTTL = 5 * time.Minute
	// billHistory is how far back bills can be downloaded.
	billHistory = 90 * 24 * time.Hour
	// billFeePerMille is the simulated merchant fee rate, 0.6%.
	billFeePerMille = 6
)

// BillDivergence makes a day's bill disagree with the simulator's own
// ledger, as real bills sometimes disagree with a merchant's books.
type BillDivergence struct {
	// Omit leaves these orders (and their refunds) out of the bill: orders
	// the platform never saw.
	Omit []string `json:"omit,omitempty"`
	// Amounts shows these orders with another total (fen) in the bill.
	Amounts map[string]int64 `json:"amounts,omitempty"`
	// Extra adds payments no merchant order matches.
	Extra []BillExtraPayment `json:"extra,omitempty"`
	// Tamper serves a download that differs from the file the platform
	// described (WeChat Pay: the SHA1 no longer matches).
	Tamper bool `json:"tamper,omitempty"`
}

// BillExtraPayment is a payment that only the bill knows.
type BillExtraPayment struct {
	OutTradeNo string `json:"out_trade_no"`
	Amount     int64  `json:"amount"`
}

// billDay is what was asked of one account's bill for one day.
type billDay struct {
	ready   bool
	omit    map[string]bool
	amounts map[string]int64
	extra   []BillExtraPayment
	tamper  bool
}

// billToken is a download link's state: the exact file to serve.
type billToken struct {
	account string
	file    []byte
	expires time.Time
}

type billState struct {
	mu     sync.Mutex
	days   map[string]*billDay // account + "|" + date
	tokens map[string]*billToken
}

func newBillState() *billState {
	return &billState{days: map[string]*billDay{}, tokens: map[string]*billToken{}}
}

// billAccount names the books a bill covers: a WeChat Pay or QQ wallet
// merchant, or an Alipay app.
func billAccount(a *App) (string, error) {
	switch {
	case a.Platform == WeChat && a.WeChatPay != nil:
		return "wechatpay:" + a.WeChatPay.MchID, nil
	case a.Platform == QQ && a.QPay != nil:
		return "qpay:" + a.QPay.MchID, nil
	case a.Platform == Alipay && a.Alipay != nil:
		return "alipay:" + a.AppID, nil
	}
	return "", fmt.Errorf("sandbox: app %s has no merchant account", a.ID)
}

// billAccounts names every book of app a that has bills: its merchant
// account and, for WeChat apps with virtual payment, that too.
func billAccounts(a *App) ([]string, error) {
	var out []string
	if acc, err := billAccount(a); err == nil {
		out = append(out, acc)
	}
	if a.Platform == WeChat && a.XPay != nil {
		out = append(out, xpayBillAccount(a))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("sandbox: app %s has no merchant account", a.ID)
	}
	return out, nil
}

// parseBillDate reads "YYYY-MM-DD" (or "YYYYMMDD") as a day in Asia/Shanghai.
func parseBillDate(s string) (time.Time, error) {
	for _, l := range []string{time.DateOnly, "20060102"} {
		if t, err := time.ParseInLocation(l, s, wechatPayZone); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("sandbox: bill date %q: want YYYY-MM-DD", s)
}

// day returns the day's settings, creating them. Callers hold st.mu.
func (st *billState) day(account string, day time.Time) *billDay {
	k := account + "|" + day.Format(time.DateOnly)
	d := st.days[k]
	if d == nil {
		d = &billDay{omit: map[string]bool{}, amounts: map[string]int64{}}
		st.days[k] = d
	}
	return d
}

// billDayOf names the books and the day of app's bills for date
// (YYYY-MM-DD).
func (s *Sandbox) billDayOf(appID, date string) (accounts []string, day time.Time, err error) {
	a := s.App(appID)
	if a == nil {
		return nil, time.Time{}, fmt.Errorf("sandbox: unknown app %q", appID)
	}
	if accounts, err = billAccounts(a); err != nil {
		return nil, time.Time{}, err
	}
	if day, err = parseBillDate(date); err != nil {
		return nil, time.Time{}, err
	}
	return accounts, day, nil
}

// MarkBillReady makes app's bills for date (YYYY-MM-DD) available now,
// before the usual 10:00 the next day.
func (s *Sandbox) MarkBillReady(appID, date string) error {
	accounts, day, err := s.billDayOf(appID, date)
	if err != nil {
		return err
	}
	s.bills.mu.Lock()
	defer s.bills.mu.Unlock()
	for _, account := range accounts {
		s.bills.day(account, day).ready = true
	}
	return nil
}

// DivergeBill adds divergences to app's bills for date (YYYY-MM-DD).
// Omissions and amounts apply to whichever bill has the order; extra
// payments go to the first (the merchant account's).
func (s *Sandbox) DivergeBill(appID, date string, d BillDivergence) error {
	accounts, day, err := s.billDayOf(appID, date)
	if err != nil {
		return err
	}
	for _, x := range d.Extra {
		if x.OutTradeNo == "" || x.Amount <= 0 {
			return fmt.Errorf("sandbox: an extra payment needs an out_trade_no and a positive amount")
		}
	}
	s.bills.mu.Lock()
	defer s.bills.mu.Unlock()
	for i, account := range accounts {
		bd := s.bills.day(account, day)
		for _, no := range d.Omit {
			bd.omit[no] = true
		}
		for no, amount := range d.Amounts {
			bd.amounts[no] = amount
		}
		if i == 0 {
			bd.extra = append(bd.extra, d.Extra...)
		}
		bd.tamper = bd.tamper || d.Tamper
	}
	return nil
}

// billReadiness says whether account's bill for day can be served now.
type billReadiness int

const (
	billReady billReadiness = iota
	billNotReady
	billOutOfRange // in the future, or older than billHistory
)

// readiness reports whether account's bill for day can be served at now,
// and the day's settings (a copy).
func (st *billState) readiness(account string, day, now time.Time) (billReadiness, billDay) {
	st.mu.Lock()
	defer st.mu.Unlock()
	d := *st.day(account, day)
	switch {
	case day.After(now) || now.Sub(day) > billHistory:
		return billOutOfRange, d
	case d.ready || !now.Before(day.AddDate(0, 0, 1).Add(billReadyHour*time.Hour)):
		return billReady, d
	}
	return billNotReady, d
}

// newToken stores file for download by account and returns its token.
func (st *billState) newToken(account string, file []byte, now time.Time) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, t := range st.tokens {
		if now.After(t.expires) {
			delete(st.tokens, k)
		}
	}
	tok := randomHex(16)
	st.tokens[tok] = &billToken{account: account, file: file, expires: now.Add(billTokenTTL)}
	return tok
}

// file returns the file of a live token of account.
func (st *billState) file(account, token string, now time.Time) ([]byte, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.tokens[token]
	if t == nil || t.account != account || now.After(t.expires) {
		return nil, false
	}
	return t.file, true
}

// simBillRow is one row of a simulated bill, in platform-neutral form.
type simBillRow struct {
	refund        bool
	at            time.Time // payment or refund success time
	created       time.Time // the order's creation time
	appID         string
	mchID         string
	outTradeNo    string
	transactionID string
	outRefundNo   string
	refundID      string
	total         int64 // the order total
	refundAmount  int64 // refund rows
	description   string
	attach        string
	payer         string // openid, or the Alipay buyer
}

// fee is the simulated fee of a row, as the merchant's cost: 0.6% of the
// amount, rounded half up to the fen; negative (returned) on refunds.
func (r *simBillRow) fee() int64 {
	if r.refund {
		return -((r.refundAmount*billFeePerMille + 500) / 1000)
	}
	return (r.total*billFeePerMille + 500) / 1000
}

// applyDivergences applies d to rows (sorted by time) for day; extra
// payments get made-up identities at noon.
func applyDivergences(rows []simBillRow, d billDay, day time.Time, newTransactionID func(time.Time) string) []simBillRow {
	out := rows[:0]
	for _, r := range rows {
		if d.omit[r.outTradeNo] {
			continue
		}
		if v, ok := d.amounts[r.outTradeNo]; ok && !r.refund {
			r.total = v
		}
		out = append(out, r)
	}
	noon := day.Add(12 * time.Hour)
	for i, x := range d.extra {
		at := noon.Add(time.Duration(i) * time.Second)
		out = append(out, simBillRow{
			at: at, created: at, outTradeNo: x.OutTradeNo, transactionID: newTransactionID(at),
			total: x.Amount, description: "(not in the merchant's books)",
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// inDay reports whether t falls on day (Asia/Shanghai).
func inDay(t, day time.Time) bool {
	return !t.IsZero() && !t.Before(day) && t.Before(day.AddDate(0, 0, 1))
}

// yuan formats fen as yuan with two decimals.
func yuan(fen int64) string { return alipayFormatYuan(fen) }

// backtickCSV renders cells as one bill line, every cell prefixed with a
// backtick as WeChat Pay and QQ wallet write detail and summary rows.
func backtickCSV(b *bytes.Buffer, cells ...string) {
	for i, c := range cells {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('`')
		b.WriteString(strings.NewReplacer(",", "，", "\r", " ", "\n", " ").Replace(c))
	}
	b.WriteString("\r\n")
}

// --- control routes ---

func (s *Sandbox) mountBillControl(g fiber.Router) {
	g.Post("/bills/:date/ready", s.handleBillReady)
	g.Post("/bills/:date/divergences", s.handleBillDivergence)
	g.Get("/bills/:date", s.handleBillFile)
}

func (s *Sandbox) handleBillReady(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	if err := s.MarkBillReady(a.ID, c.Params("date")); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	return c.JSON(fiber.Map{"app": a.ID, "date": c.Params("date"), "ready": true})
}

func (s *Sandbox) handleBillDivergence(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	var d BillDivergence
	if err := json.Unmarshal(c.Body(), &d); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "invalid JSON: "+err.Error())
	}
	if err := s.DivergeBill(a.ID, c.Params("date"), d); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	return c.JSON(fiber.Map{"app": a.ID, "date": c.Params("date"), "divergence": d})
}

// handleBillFile shows a day's bill file as the platform would serve it,
// ready or not: for people reading the simulator, not for minigate.
func (s *Sandbox) handleBillFile(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	day, err := parseBillDate(c.Params("date"))
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	if c.Query("bill") == "xpay" && a.Platform == WeChat && a.XPay != nil {
		_, d := s.bills.readiness(xpayBillAccount(a), day, s.now())
		c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
		return c.Send(s.xpayBillFile(a, day, d))
	}
	account, err := billAccount(a)
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	_, d := s.bills.readiness(account, day, s.now())
	switch a.Platform {
	case WeChat:
		file, _ := s.wechatPayBillFile(a.WeChatPay.MchID, day, d)
		c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
		return c.Send(file)
	case QQ:
		file, _ := s.qpayBillFile(a.QPay.MchID, day, d)
		c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
		return c.Send(file)
	default:
		file, err := s.alipayBillZip(a, day, d, s.now())
		if err != nil {
			return err
		}
		c.Set(fiber.HeaderContentType, "application/zip")
		c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+alipayBillZipName(a, day)+`"`)
		return c.Send(file)
	}
}
