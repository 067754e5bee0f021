package orders

import (
	"encoding/json"
	"regexp"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/httpx"
)

// HeaderIdempotencyKey is the request header that makes order and refund
// creation safe to retry.
const HeaderIdempotencyKey = "Idempotency-Key"

// headerReplayed marks a response that repeats an earlier request's result.
const headerReplayed = "Idempotent-Replayed"

// Mount registers the order routes. Payment notifications reach orders
// through the callback pipeline (webhooks.Payments → ReceivePayment).
func (s *Service) Mount(r fiber.Router, au *auth.Authenticator) {
	r.Post("/v1/apps/:app/orders", au.Operator(), s.handleCreate)
	r.Get("/v1/orders", au.Operator(), s.handleList)
	r.Get("/v1/orders/:id", au.Any(), s.handleGet)
	r.Post("/v1/orders/:id/pay", au.User(), s.handlePay)
	r.Post("/v1/orders/:id/sync", au.Operator(), s.handleSync)
	r.Post("/v1/orders/:id/close", au.Operator(), s.handleClose)
	r.Post("/v1/orders/:id/refunds", au.Operator(), s.handleRefund)
}

// createBody is the wire form of CreateRequest; numbers are kept raw so
// that only JSON integers are accepted.
type createBody struct {
	UserID      string          `json:"user_id"`
	OpenID      string          `json:"openid"`
	Amount      json.RawMessage `json:"amount"`
	Description string          `json:"description"`
	OutTradeNo  string          `json:"out_trade_no"`
	ExpiresIn   json.RawMessage `json:"expires_in"`
	Attach      string          `json:"attach"`
}

var jsonInteger = regexp.MustCompile(`^-?(0|[1-9][0-9]{0,18})$`)

// intField parses a JSON integer literal: strings, fractions, exponents and
// out-of-range numbers are 400s. Absent (or null) is 0 unless required.
func intField(raw json.RawMessage, field string, required bool) (int64, error) {
	s := string(raw)
	if s == "" || s == "null" {
		if required {
			return 0, invalid(field, field+" is required")
		}
		return 0, nil
	}
	if !jsonInteger.MatchString(s) {
		return 0, invalid(field, field+" must be a JSON integer")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, invalid(field, field+" is out of range")
	}
	return n, nil
}

func (s *Service) handleCreate(c *fiber.Ctx) error {
	var b createBody
	if err := httpx.BindJSON(c, &b); err != nil {
		return err
	}
	amount, err := intField(b.Amount, "amount", true)
	if err != nil {
		return err
	}
	expiresIn, err := intField(b.ExpiresIn, "expires_in", false)
	if err != nil {
		return err
	}
	v, err := s.Create(c.UserContext(), c.Params("app"), c.Get(HeaderIdempotencyKey), CreateRequest{
		UserID: b.UserID, OpenID: b.OpenID, Amount: amount, Description: b.Description,
		OutTradeNo: b.OutTradeNo, ExpiresIn: expiresIn, Attach: b.Attach,
	}, c.IP())
	if err != nil {
		return err
	}
	if v.Replayed {
		c.Set(headerReplayed, "true")
	}
	return c.Status(fiber.StatusCreated).JSON(v)
}

func (s *Service) handleGet(c *fiber.Ctx) error {
	p := auth.FromCtx(c)
	var (
		v   *View
		err error
	)
	if p.Kind == auth.KindUser {
		v, err = s.GetForUser(c.UserContext(), p.UserID, c.Params("id"))
	} else {
		v, err = s.Get(c.UserContext(), c.Params("id"))
	}
	if err != nil {
		return err
	}
	return c.JSON(v)
}

func (s *Service) handlePay(c *fiber.Ctx) error {
	p := auth.FromCtx(c)
	v, err := s.Pay(c.UserContext(), p.UserID, c.Params("id"), c.IP())
	if err != nil {
		return err
	}
	return c.JSON(v)
}

func (s *Service) handleSync(c *fiber.Ctx) error {
	v, err := s.Sync(c.UserContext(), c.Params("id"))
	if err != nil {
		return err
	}
	return c.JSON(v)
}

func (s *Service) handleClose(c *fiber.Ctx) error {
	v, err := s.Close(c.UserContext(), c.Params("id"))
	if err != nil {
		return err
	}
	return c.JSON(v)
}

// refundBody is the wire form of RefundCreate.
type refundBody struct {
	Amount json.RawMessage `json:"amount"`
	Reason string          `json:"reason"`
}

func (s *Service) handleRefund(c *fiber.Ctx) error {
	var b refundBody
	if err := httpx.BindJSON(c, &b); err != nil {
		return err
	}
	amount, err := intField(b.Amount, "amount", true)
	if err != nil {
		return err
	}
	res, err := s.CreateRefund(c.UserContext(), c.Params("id"), c.Get(HeaderIdempotencyKey), RefundCreate{Amount: amount, Reason: b.Reason})
	if err != nil {
		return err
	}
	if res.Replayed {
		c.Set(headerReplayed, "true")
	}
	status := fiber.StatusCreated
	if res.Refund.Status == RefundStatusPending {
		status = fiber.StatusAccepted // the platform's answer is still to come
	}
	return c.Status(status).JSON(res.Refund)
}

func (s *Service) handleList(c *fiber.Ctx) error {
	f := ListFilter{
		App: c.Query("app"), Status: Status(c.Query("status")), Cursor: c.Query("cursor"),
		OutTradeNo: c.Query("out_trade_no"), UserID: c.Query("user_id"),
	}
	switch flag := c.Query("flag"); flag {
	case "":
	case "needs_review":
		f.NeedsReview = true
	default:
		return invalid("flag", "flag must be needs_review")
	}
	var err error
	if f.From, err = timeParam(c.Query("from"), "from"); err != nil {
		return err
	}
	if f.To, err = timeParam(c.Query("to"), "to"); err != nil {
		return err
	}
	if l := c.Query("limit"); l != "" {
		if f.Limit, err = strconv.Atoi(l); err != nil || f.Limit < 1 {
			return invalid("limit", "limit must be a positive integer")
		}
	}
	page, err := s.List(c.UserContext(), f)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

// timeParam parses an RFC 3339 time or a date (YYYY-MM-DD, midnight in
// Asia/Shanghai, the platforms' business day).
func timeParam(v, field string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, v, shanghai); err == nil {
		return t, nil
	}
	return time.Time{}, apperr.New(apperr.Invalid, "invalid_"+field, field+" must be an RFC 3339 time or a YYYY-MM-DD date").WithDetail("field", field)
}

// shanghai is UTC+8, the platforms' time zone (no DST; fixed so that the
// binary does not depend on the system's zone database).
var shanghai = time.FixedZone("Asia/Shanghai", 8*3600)
