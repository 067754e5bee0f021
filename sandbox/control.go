package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Faults are the ways a simulated callback can go wrong. They are accepted
// by the control routes as {"faults": {...}}.
type Faults struct {
	// Duplicates sends this many extra copies, concurrently.
	Duplicates int `json:"duplicates"`
	// DelayMS waits this long before sending.
	DelayMS int `json:"delay_ms"`
	// Drop does everything but send (the platform-side effect still happens,
	// as when a real notification is lost).
	Drop bool `json:"drop"`
	// Amount overrides the amount (fen) in a payment notification.
	Amount *int64 `json:"amount,omitempty"`
	// BadSignature corrupts the signature.
	BadSignature bool `json:"bad_signature"`
	// BadMsgSignature corrupts only msg_signature (WeChat/QQ safe modes).
	BadMsgSignature bool `json:"bad_msg_signature"`
	// StaleTimestamp dates the callback 10 minutes in the past.
	StaleTimestamp bool `json:"stale_timestamp"`
	// ForeignAppID puts another app id inside the ciphertext / payload.
	ForeignAppID bool `json:"foreign_appid"`
	// ForeignMerchant puts another merchant id in a payment notification.
	ForeignMerchant bool `json:"foreign_merchant"`
	// TamperCiphertext flips a byte of the ciphertext.
	TamperCiphertext bool `json:"tamper_ciphertext"`
	// Truncate cuts the body in half.
	Truncate bool `json:"truncate"`
}

// PushRequest asks the simulator to push a user message to minigate.
type PushRequest struct {
	Type    string `json:"type"` // text, image, miniprogrampage, event
	Content string `json:"content,omitempty"`
	// Event is the event name for type "event" (default user_enter_tempsession).
	Event       string `json:"event,omitempty"`
	SessionFrom string `json:"session_from,omitempty"`
	// MediaID for images; when empty the simulator stores a small PNG.
	MediaID      string `json:"media_id,omitempty"`
	Title        string `json:"title,omitempty"`
	PagePath     string `json:"page_path,omitempty"`
	ThumbMediaID string `json:"thumb_media_id,omitempty"`
	// Mode and Format override the app's defaults (WeChat/QQ).
	Mode   string `json:"mode,omitempty"`
	Format string `json:"format,omitempty"`
	// MsgID and CreateTime override the generated ones (to re-send one message).
	MsgID      int64  `json:"msg_id,omitempty"`
	CreateTime int64  `json:"create_time,omitempty"`
	Faults     Faults `json:"faults"`
}

// PayRequest asks the simulator to have the user pay an order.
type PayRequest struct {
	Faults Faults `json:"faults"`
}

func (s *Sandbox) mountControl(app *fiber.App) {
	app.Get("/redelivery", s.handleRedelivery)
	app.Put("/redelivery", s.handleSetRedelivery)
	g := app.Group("/apps/:app")
	g.Post("/users/:name/code", s.handleCode("login"))
	g.Post("/users/:name/phone-code", s.handleCode("phone"))
	g.Get("/users/:name", s.handleUser)
	g.Post("/users/:name/messages", s.handlePush)
	g.Post("/orders/:out_trade_no/pay", s.handlePay)
	s.mountWeChatControl(g)
	g.Post("/orders/:out_trade_no/refund-notify", s.handleWeChatPayRefundNotify)
	s.mountBillControl(g)
}

func (s *Sandbox) controlApp(c *fiber.Ctx) (*App, error) {
	a := s.App(c.Params("app"))
	if a == nil {
		return nil, fiber.NewError(fiber.StatusNotFound, "unknown sandbox app "+c.Params("app"))
	}
	return a, nil
}

// platformControl makes h a control route for the apps of one platform:
// other apps' requests pass on to the next handler, so another platform
// may serve the same path.
func (s *Sandbox) platformControl(platform string, h func(c *fiber.Ctx, a *App) error) fiber.Handler {
	return func(c *fiber.Ctx) error {
		a, err := s.controlApp(c)
		if err != nil {
			return err
		}
		if a.Platform != platform {
			return c.Next()
		}
		return h(c, a)
	}
}

func (s *Sandbox) handleCode(kind string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		a, err := s.controlApp(c)
		if err != nil {
			return err
		}
		code, err := s.MintCode(a.ID, c.Params("name"), kind)
		if err != nil {
			return fiber.NewError(fiber.StatusBadRequest, err.Error())
		}
		return c.JSON(fiber.Map{"code": code, "expires_in": int(CodeTTL.Seconds())})
	}
}

func (s *Sandbox) handleUser(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	return c.JSON(s.User(a, c.Params("name")))
}

func (s *Sandbox) handlePush(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	var req PushRequest
	if err := json.Unmarshal(c.Body(), &req); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "invalid JSON: "+err.Error())
	}
	rep, err := s.Push(c.UserContext(), a, c.Params("name"), req)
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	return c.JSON(rep)
}

func (s *Sandbox) handlePay(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	var req PayRequest
	if len(bytes.TrimSpace(c.Body())) > 0 {
		if err := json.Unmarshal(c.Body(), &req); err != nil {
			return fiber.NewError(fiber.StatusBadRequest, "invalid JSON: "+err.Error())
		}
	}
	rep, err := s.Pay(c.UserContext(), a, c.Params("out_trade_no"), req.Faults)
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	return c.JSON(rep)
}

// Push has simulated user name send a message to app; the simulator posts
// it to minigate's message callback and reports what minigate answered.
func (s *Sandbox) Push(ctx context.Context, a *App, name string, req PushRequest) (*Report, error) {
	u := s.User(a, name)
	if a.Platform == Alipay {
		return s.pushAlipayMessage(ctx, a, u, req)
	}
	return s.pushWeChatMessage(ctx, a, u, req)
}

// Pay has the order's payer pay it; the simulator sends the platform's
// payment notification to minigate with the requested faults.
func (s *Sandbox) Pay(ctx context.Context, a *App, outTradeNo string, f Faults) (*Report, error) {
	switch a.Platform {
	case WeChat:
		return s.payWeChat(ctx, a, outTradeNo, f)
	case QQ:
		return s.payQPay(ctx, a, outTradeNo, f)
	default:
		return s.payAlipay(ctx, a, outTradeNo, f)
	}
}

// sendWithFaults applies the delivery-level faults (delay, drop,
// duplicates) to send, which makes one delivery.
func (s *Sandbox) sendWithFaults(ctx context.Context, f Faults, send func(context.Context) Delivery) *Report {
	rep := &Report{}
	if f.DelayMS > 0 {
		select {
		case <-time.After(time.Duration(f.DelayMS) * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if f.Drop {
		rep.Dropped = true
		return rep
	}
	n := 1 + max(f.Duplicates, 0)
	rep.Deliveries = make([]Delivery, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.Deliveries[i] = send(ctx)
		}()
	}
	wg.Wait()
	return rep
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func readLimited(r io.Reader, n int64) ([]byte, error) { return io.ReadAll(io.LimitReader(r, n)) }

// RedeliveryRequest is the body of PUT /sandbox/redelivery: the retry
// schedule in milliseconds (empty or absent turns redelivery off), or
// "wechatpay" for WeChatPayRetries multiplied by Scale (default 1).
type RedeliveryRequest struct {
	DelaysMS []int64 `json:"delays_ms"`
	Schedule string  `json:"schedule"`
	Scale    float64 `json:"scale"`
}

func (s *Sandbox) handleSetRedelivery(c *fiber.Ctx) error {
	var req RedeliveryRequest
	if err := json.Unmarshal(c.Body(), &req); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "invalid JSON: "+err.Error())
	}
	var schedule []time.Duration
	switch {
	case req.Schedule == "wechatpay":
		scale := req.Scale
		if scale == 0 {
			scale = 1
		}
		if scale < 0 {
			return fiber.NewError(fiber.StatusBadRequest, "scale must be positive")
		}
		schedule = Scaled(WeChatPayRetries, scale)
	case req.Schedule != "":
		return fiber.NewError(fiber.StatusBadRequest, `schedule must be "wechatpay" (or give delays_ms)`)
	default:
		for _, ms := range req.DelaysMS {
			if ms <= 0 {
				return fiber.NewError(fiber.StatusBadRequest, "delays_ms must be positive")
			}
			schedule = append(schedule, time.Duration(ms)*time.Millisecond)
		}
	}
	s.SetRedelivery(schedule)
	return s.handleRedelivery(c)
}

// handleRedelivery reports the schedule and the callbacks sent since it was
// set (to URLs starting with ?prefix=, default all).
func (s *Sandbox) handleRedelivery(c *fiber.Ctx) error {
	s.redeliver.mu.Lock()
	delays := make([]int64, len(s.redeliver.schedule))
	for i, d := range s.redeliver.schedule {
		delays[i] = d.Milliseconds()
	}
	on := s.redeliver.schedule != nil
	s.redeliver.mu.Unlock()
	cbs := s.Callbacks(c.Query("prefix"))
	pending := 0
	for _, cb := range cbs {
		if cb.Pending {
			pending++
		}
	}
	if cbs == nil {
		cbs = []Callback{}
	}
	return c.JSON(fiber.Map{"enabled": on, "delays_ms": delays, "pending": pending, "callbacks": cbs})
}

// slowdown holds the delays set with Slow.
type slowdown struct {
	mu    sync.Mutex
	rules []*slowRule
}

type slowRule struct {
	prefix  string
	delay   time.Duration
	release chan struct{}
}

// Slow makes the simulator wait d before handling requests whose path
// below /sandbox starts with prefix ("/wechatpay/v3/pay/transactions/jsapi",
// or "/wechat/" for the whole WeChat API), as a platform slower than
// minigate's upstream timeout does. The request is then handled as usual,
// as a platform handles a request whose caller gave up. The returned undo
// ends the slowdown and releases the requests still waiting.
func (s *Sandbox) Slow(prefix string, d time.Duration) (undo func()) {
	r := &slowRule{prefix: prefix, delay: d, release: make(chan struct{})}
	sd := s.slow
	sd.mu.Lock()
	sd.rules = append(sd.rules, r)
	sd.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			sd.mu.Lock()
			defer sd.mu.Unlock()
			for i, x := range sd.rules {
				if x == r {
					sd.rules = append(sd.rules[:i], sd.rules[i+1:]...)
					break
				}
			}
			close(r.release)
		})
	}
}

func (sd *slowdown) middleware(c *fiber.Ctx) error {
	path := c.Path()
	if i := strings.Index(path, "/sandbox/"); i >= 0 {
		path = path[i+len("/sandbox"):]
	}
	sd.mu.Lock()
	var rule *slowRule
	for _, r := range sd.rules {
		if strings.HasPrefix(path, r.prefix) {
			rule = r
			break
		}
	}
	sd.mu.Unlock()
	if rule != nil {
		t := time.NewTimer(rule.delay)
		select {
		case <-t.C:
		case <-rule.release:
			t.Stop()
		}
	}
	return c.Next()
}
