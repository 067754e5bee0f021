package orders

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/ids"
)

// CreateRequest is the body of POST /v1/apps/{app}/orders, validated.
type CreateRequest struct {
	// UserID or OpenID names the payer: a minigate user with an identity
	// in the app, or an openid of the app (for Alipay the user's Alipay
	// user_id 2088… or open_id).
	UserID string `json:"user_id,omitempty"`
	OpenID string `json:"openid,omitempty"`
	// Amount is in fen.
	Amount      int64  `json:"amount"`
	Description string `json:"description"`
	// OutTradeNo is generated when empty.
	OutTradeNo string `json:"out_trade_no,omitempty"`
	// ExpiresIn is in seconds; zero means DefaultExpiresIn.
	ExpiresIn int64  `json:"expires_in,omitempty"`
	Attach    string `json:"attach,omitempty"`
}

// Field limits that hold on every platform.
const (
	maxDescriptionRunes = 127 // WeChat description ≤ 127 characters, QQ body ≤ 128
	maxAttachBytes      = 127 // QQ attach ≤ 127 bytes, WeChat ≤ 128 characters
	maxOpenIDLen        = 128
	maxKeyLen           = 255
)

// outTradeNoPattern is what every platform accepts: WeChat [0-9A-Za-z_-*|]
// up to 32, QQ up to 32, Alipay letters, digits and underscores up to 64.
var outTradeNoPattern = regexp.MustCompile(`^[0-9A-Za-z_]{6,32}$`)

// alipayUserIDPattern is an Alipay user_id (buyer_id).
var alipayUserIDPattern = regexp.MustCompile(`^2088[0-9]{12}$`)

// invalid returns a 400 for one field.
func invalid(field, msg string) error {
	return apperr.New(apperr.Invalid, "invalid_"+field, msg).WithDetail("field", field)
}

func (r *CreateRequest) validate() error {
	switch {
	case r.UserID != "" && r.OpenID != "":
		return invalid("payer", "give either user_id or openid, not both")
	case r.UserID == "" && r.OpenID == "":
		return invalid("payer", "user_id or openid is required")
	case r.UserID != "" && !ids.Valid("usr", r.UserID):
		return invalid("user_id", "user_id must be a minigate user id (usr_…)")
	case r.OpenID != "" && (len(r.OpenID) > maxOpenIDLen || !printableASCII(r.OpenID)):
		return invalid("openid", "openid must be 1 to 128 printable ASCII characters")
	case r.Amount <= 0 || r.Amount > MaxAmount:
		return invalid("amount", fmt.Sprintf("amount must be an integer number of fen from 1 to %d", MaxAmount))
	case strings.TrimSpace(r.Description) == "":
		return invalid("description", "description is required")
	case !cleanText(r.Description) || utf8.RuneCountInString(r.Description) > maxDescriptionRunes:
		return invalid("description", fmt.Sprintf("description must be at most %d characters of text", maxDescriptionRunes))
	case r.OutTradeNo != "" && !outTradeNoPattern.MatchString(r.OutTradeNo):
		return invalid("out_trade_no", "out_trade_no must be 6 to 32 characters of [0-9A-Za-z_]")
	case r.ExpiresIn != 0 && (r.ExpiresIn < int64(MinExpiresIn/time.Second) || r.ExpiresIn > int64(MaxExpiresIn/time.Second)):
		return invalid("expires_in", fmt.Sprintf("expires_in must be from %d to %d seconds", int64(MinExpiresIn/time.Second), int64(MaxExpiresIn/time.Second)))
	case !cleanText(r.Attach) || len(r.Attach) > maxAttachBytes:
		return invalid("attach", fmt.Sprintf("attach must be at most %d bytes of text", maxAttachBytes))
	}
	return nil
}

// hash identifies the request for idempotency: the same fields give the
// same hash whatever their JSON spelling.
func (r *CreateRequest) hash() string {
	raw, _ := json.Marshal(r) // a struct of strings and ints always encodes
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}

func cleanText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// checkKey validates an Idempotency-Key header.
func checkKey(key string) error {
	if len(key) > maxKeyLen || !printableASCII(key) {
		return errKeyRequired
	}
	return nil
}

// resolvePayer turns the request's payer into the platform payer and, when
// the payer is a minigate user, its id.
func (s *Service) resolvePayer(ctx context.Context, a *App, r *CreateRequest) (Payer, *string, error) {
	if r.UserID != "" {
		id, ok, err := s.users.IdentityOfUser(ctx, a.ID, r.UserID)
		if err != nil {
			return Payer{}, nil, fmt.Errorf("orders: resolve payer: %w", err)
		}
		if !ok {
			return Payer{}, nil, errUserNotFound
		}
		return identityPayer(a, id), &id.UserID, nil
	}
	id, ok, err := s.users.IdentityByOpenID(ctx, a.ID, r.OpenID)
	if err != nil {
		return Payer{}, nil, fmt.Errorf("orders: resolve payer: %w", err)
	}
	if ok {
		return identityPayer(a, id), &id.UserID, nil
	}
	// An openid minigate has not seen log in: the platform checks that it
	// belongs to the app when the order is prepaid.
	if a.Platform == "alipay" && alipayUserIDPattern.MatchString(r.OpenID) {
		return Payer{AlipayUserID: r.OpenID}, nil, nil
	}
	return Payer{OpenID: r.OpenID}, nil, nil
}

func identityPayer(a *App, id Identity) Payer {
	if a.Platform == "alipay" && id.AlipayUserID != "" {
		return Payer{AlipayUserID: id.AlipayUserID, OpenID: id.OpenID}
	}
	return Payer{OpenID: id.OpenID}
}

// Create stores an order, then prepays it at the platform and returns it
// with its pay parameters. The same key with the same request returns the
// same order (retrying a prepay that failed); with another request it is a
// conflict.
func (s *Service) Create(ctx context.Context, appID, key string, req CreateRequest, clientIP string) (*View, error) {
	a, err := s.app(appID)
	if err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	scope, hash := "orders.create:"+a.ID, req.hash()
	payer, userID, err := s.resolvePayer(ctx, a, &req)
	if err != nil {
		return nil, err
	}
	now := s.now()
	id := ids.New("ord")
	otn := req.OutTradeNo
	if otn == "" {
		otn = "MG" + strings.TrimPrefix(id, "ord_") // 28 of [0-9A-Z], unique with the id
	}
	expiresIn := DefaultExpiresIn
	if req.ExpiresIn != 0 {
		expiresIn = time.Duration(req.ExpiresIn) * time.Second
	}
	o, created, err := insertOrder(ctx, s.db, scope, key, hash, newOrder{
		ID: id, App: a.ID, Platform: a.Platform, UserID: userID,
		OpenID: payer.OpenID, AlipayUserID: payer.AlipayUserID, OutTradeNo: otn,
		Description: req.Description, Attach: req.Attach, Amount: req.Amount, Currency: "CNY",
		ExpiresAt: now.Add(expiresIn).Truncate(time.Second), Now: now,
		ClaimUntil: s.claimUntil(now), NextCheck: s.firstCheck(now),
	})
	if errors.Is(err, errOutTradeNoTaken) {
		return nil, errOutTradeNoUsed
	}
	if err != nil {
		return nil, err
	}
	if !created {
		return s.replayCreate(ctx, a, scope, key, hash, clientIP)
	}
	return s.prepay(ctx, a, o, clientIP)
}

// replayCreate answers a repeated create: the stored order, prepaid now if
// the first attempt's prepay failed.
func (s *Service) replayCreate(ctx context.Context, a *App, scope, key, hash, clientIP string) (*View, error) {
	id, err := replayedResource(ctx, s.db, scope, key, hash)
	if err != nil {
		return nil, err
	}
	o, err := getOrder(ctx, s.db, OrderGet, id)
	if err != nil {
		return nil, err
	}
	if o.PrepayID == "" && o.Status.Unpaid() {
		if o, err = s.prepayNow(ctx, a, o, clientIP); err != nil {
			return nil, err
		}
	}
	v := &View{Order: o, Replayed: true}
	if len(o.StoredPayParams) > 0 {
		if err := json.Unmarshal(o.StoredPayParams, &v.PayParams); err != nil {
			return nil, fmt.Errorf("orders: decode pay params: %w", err)
		}
	}
	return v, nil
}

// replayedResource returns the id of what key (in scope) was first used to
// make; errKeyReused when that was another request (its hash differs).
func replayedResource(ctx context.Context, ex sqlx.ExtContext, scope, key, hash string) (string, error) {
	k, err := getIdempotencyKey(ctx, ex, scope, key)
	if err != nil {
		return "", err
	}
	if k.RequestHash != hash {
		return "", errKeyReused
	}
	return k.ResourceID, nil
}

// prepayNow prepays an unpaid order that has no prepay id yet, unless
// another request is doing so.
func (s *Service) prepayNow(ctx context.Context, a *App, o *Order, clientIP string) (*Order, error) {
	now := s.now()
	if !now.Before(o.ExpiresAt) {
		return nil, errOrderExpired
	}
	claimed, err := claimPrepay(ctx, s.db, o.ID, s.claimUntil(now), now)
	if errors.Is(err, ErrNotFound) {
		cur, gerr := getOrder(ctx, s.db, OrderGet, o.ID)
		if gerr != nil {
			return nil, gerr
		}
		if cur.PrepayID != "" {
			return cur, nil
		}
		if serr := statusError(cur.Status); serr != nil {
			return nil, serr
		}
		return nil, errInProgress
	}
	if err != nil {
		return nil, err
	}
	v, err := s.prepay(ctx, a, claimed, clientIP)
	if err != nil {
		return nil, err
	}
	return v.Order, nil
}

// prepay calls the platform for a claimed order and stores the result. A
// failed call releases the claim, so the same request can be retried.
func (s *Service) prepay(ctx context.Context, a *App, o *Order, clientIP string) (*View, error) {
	p, err := a.Payments.Prepay(ctx, PrepayRequest{
		OutTradeNo: o.OutTradeNo, Description: o.Description, Amount: o.Amount, Attach: o.Attach,
		Payer: o.Payer(), ExpiresAt: o.ExpiresAt, NotifyURL: a.NotifyURL, ClientIP: clientIP,
	})
	// The platform call happened: record its outcome even if the client
	// has gone away.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	if err != nil {
		if rerr := releasePrepay(wctx, s.db, o.ID, platformDetail(err), s.now()); rerr != nil {
			s.log.Error("orders: prepay failure not recorded", "order_id", o.ID, "err", rerr)
		}
		return nil, fmt.Errorf("orders: prepay %s: %w", o.ID, adapters.ToAppError(err))
	}
	params, perr := a.Payments.PayParams(ctx, p)
	if perr != nil {
		params = nil
	}
	stored, err := setPrepay(wctx, s.db, o.ID, p.PrepayID, params, s.now())
	if err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, fmt.Errorf("orders: pay params %s: %w", o.ID, adapters.ToAppError(perr))
	}
	return &View{Order: stored, PayParams: params}, nil
}

// Pay returns fresh pay parameters for the user's order and moves it from
// created to paying.
func (s *Service) Pay(ctx context.Context, userID, id, clientIP string) (*View, error) {
	o, err := s.ownedOrder(ctx, userID, id)
	if err != nil {
		return nil, err
	}
	a, err := s.app(o.App)
	if err != nil {
		return nil, err
	}
	if err := statusError(o.Status); err != nil {
		return nil, err
	}
	if !s.now().Before(o.ExpiresAt) {
		return nil, errOrderExpired
	}
	if o.PrepayID == "" {
		if o, err = s.prepayNow(ctx, a, o, clientIP); err != nil {
			return nil, err
		}
	}
	params, err := a.Payments.PayParams(ctx, Prepay{PrepayID: o.PrepayID})
	if err != nil {
		return nil, fmt.Errorf("orders: pay params %s: %w", o.ID, adapters.ToAppError(err))
	}
	if o.Status == StatusCreated {
		err := s.inTx(ctx, func(tx *sqlx.Tx) error {
			moved, ok, err := s.move(ctx, tx, o, []Status{StatusCreated}, StatusPaying, SourceAPI, moveOpts{recheck: true})
			if err != nil {
				return err
			}
			if ok {
				o = moved
				return nil
			}
			if o, err = getOrder(ctx, tx, OrderGet, o.ID); err != nil {
				return err
			}
			return statusError(o.Status)
		})
		if err != nil {
			return nil, err
		}
	}
	return &View{Order: o, PayParams: params}, nil
}

// ownedOrder returns order id if user userID owns it: it was created for
// the user, or for an openid that is the user's in the order's app.
func (s *Service) ownedOrder(ctx context.Context, userID, id string) (*Order, error) {
	o, err := s.order(ctx, id)
	if err != nil {
		return nil, err
	}
	if o.UserID != nil {
		if *o.UserID == userID {
			return o, nil
		}
		return nil, errOrderNotFound
	}
	ident, ok, err := s.users.IdentityOfUser(ctx, o.App, userID)
	if err != nil {
		return nil, fmt.Errorf("orders: owner: %w", err)
	}
	if ok && ((o.PayerOpenID != "" && ident.OpenID == o.PayerOpenID) ||
		(o.PayerAlipayUserID != "" && ident.AlipayUserID == o.PayerAlipayUserID)) {
		return o, nil
	}
	return nil, errOrderNotFound
}

// order reads an order by public id; unknown and malformed ids are 404.
// orderWithApp returns order id and its app, which must take payments.
func (s *Service) orderWithApp(ctx context.Context, id string) (*Order, *App, error) {
	o, err := s.order(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	a, err := s.app(o.App)
	if err != nil {
		return nil, nil, err
	}
	return o, a, nil
}

func (s *Service) order(ctx context.Context, id string) (*Order, error) {
	if !ids.Valid("ord", id) {
		return nil, errOrderNotFound
	}
	o, err := getOrder(ctx, s.db, OrderGet, id)
	if errors.Is(err, ErrNotFound) {
		return nil, errOrderNotFound
	}
	return o, err
}

// GetForUser returns the user's order (without timeline).
func (s *Service) GetForUser(ctx context.Context, userID, id string) (*View, error) {
	o, err := s.ownedOrder(ctx, userID, id)
	if err != nil {
		return nil, err
	}
	return &View{Order: o}, nil
}

// Get returns an order with its timeline and refunds (operators).
func (s *Service) Get(ctx context.Context, id string) (*View, error) {
	o, err := s.order(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.fullView(ctx, o)
}

func (s *Service) fullView(ctx context.Context, o *Order) (*View, error) {
	events, err := listTimeline(ctx, s.db, o.ID)
	if err != nil {
		return nil, err
	}
	refunds, err := listRefunds(ctx, s.db, o.ID)
	if err != nil {
		return nil, err
	}
	if refunds == nil {
		refunds = []StoredRefund{}
	}
	return &View{Order: o, Events: events, Refunds: refunds}, nil
}

// Page is one page of GET /v1/orders.
type Page struct {
	Data       []Order `json:"data"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// List limits.
const (
	DefaultListLimit = 50
	MaxListLimit     = 200
)

// List returns orders matching f, newest first.
func (s *Service) List(ctx context.Context, f ListFilter) (*Page, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultListLimit
	}
	f.Limit = min(f.Limit, MaxListLimit)
	if f.Cursor != "" && !ids.Valid("ord", f.Cursor) {
		return nil, invalid("cursor", "cursor must be an order id from next_cursor")
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, invalid("status", "unknown status")
	}
	rows, err := listOrders(ctx, s.db, f)
	if err != nil {
		return nil, err
	}
	p := &Page{Data: rows}
	if p.Data == nil {
		p.Data = []Order{}
	}
	if len(rows) == f.Limit {
		p.NextCursor = rows[len(rows)-1].ID
	}
	return p, nil
}
