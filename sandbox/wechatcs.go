package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Customer service as the WeChat API offers it to mini-programs, under
// /sandbox/wechat (and, in WeChat's shape, under /sandbox/qq — qqcs.go):
// custom/send, custom/typing, media/upload and media/get. The simulator
// enforces WeChat's reply windows from the pushes it sent: a user's
// message allows 5 messages within 48 hours, entering the session 2
// within a minute; allowances do not add up, and a message counts against
// every allowance granted before it. It records what it received, so tests
// can check what reached the platform, and counts media downloads.

const (
	// Reply windows (WeChat's documented rules).
	csMessageLimit  = 5
	csMessageWindow = 48 * time.Hour
	csSessionLimit  = 2
	csSessionWindow = time.Minute
	// csTypingExchange: typing needs a message exchanged this recently.
	csTypingExchange = 30 * time.Second
	// csTypingLasts is how long a typing indicator shows.
	csTypingLasts = 15 * time.Second
	// csMaxImage bounds uploaded images (WeChat's temporary image limit).
	csMaxImage = 10 << 20
	// csKept bounds the messages and typing commands recorded per app.
	csKept = 500
)

// Customer-service errcodes (WeChat's).
const (
	csErrInvalidOpenID  = 40003
	csErrMediaType      = 40004
	csErrFileType       = 40005
	csErrMsgType        = 40008
	csErrImageSize      = 40009
	csErrMediaMissing   = 41005
	csErrWindowClosed   = 45015
	csErrQuotaExceeded  = 45047
	csErrTypingCommand  = 45072
	csErrTypingExchange = 45080
	csErrAlreadyTyping  = 45081
)

// API names that WeChatError.API and QQError.API select.
const (
	csAPISend   = "custom/send"
	csAPITyping = "custom/typing"
	csAPIUpload = "media/upload"
	csAPIGet    = "media/get"
)

// csOpenIDRE matches the openids the simulator makes (User).
var csOpenIDRE = regexp.MustCompile(`^o[A-Za-z0-9_-]{27}$`)

// CustomerText is a text message's body.
type CustomerText struct {
	Content string `json:"content"`
}

// CustomerMedia is an image message's body.
type CustomerMedia struct {
	MediaID string `json:"media_id"`
}

// CustomerLink is a link message's body.
type CustomerLink struct {
	Title       string `json:"title"`
	Description string `json:"description"`
	URL         string `json:"url"`
	ThumbURL    string `json:"thumb_url"`
}

// CustomerMiniProgramPage is a mini-program card's body.
type CustomerMiniProgramPage struct {
	Title        string `json:"title"`
	PagePath     string `json:"pagepath"`
	ThumbMediaID string `json:"thumb_media_id"`
	AppID        string `json:"appid,omitempty"`
}

// CustomerMessage is one custom/send call the simulator received (with a
// valid token), as parsed, with what it answered.
type CustomerMessage struct {
	App             string                   `json:"app"`
	ToUser          string                   `json:"touser"`
	MsgType         string                   `json:"msgtype"`
	Text            *CustomerText            `json:"text,omitempty"`
	Image           *CustomerMedia           `json:"image,omitempty"`
	Link            *CustomerLink            `json:"link,omitempty"`
	MiniProgramPage *CustomerMiniProgramPage `json:"miniprogrampage,omitempty"`
	// ErrCode is the simulator's answer: 0 when the message was delivered.
	ErrCode int       `json:"errcode"`
	At      time.Time `json:"at"`
	// Body is the request body as received.
	Body json.RawMessage `json:"body"`
}

// TypingCommand is one custom/typing call the simulator received.
type TypingCommand struct {
	App     string    `json:"app"`
	ToUser  string    `json:"touser"`
	Command string    `json:"command"`
	ErrCode int       `json:"errcode"`
	At      time.Time `json:"at"`
}

// csState is the customer-service part of wechatState (guarded by its
// mutex); QQ apps use it too.
type csState struct {
	// sends holds each (app, openid)'s delivered messages.
	sends map[string][]time.Time
	// typingSince is when (app, openid)'s typing indicator was shown.
	typingSince map[string]time.Time
	messages    map[string][]CustomerMessage // by app
	typing      map[string][]TypingCommand   // by app
	// fetches counts media/get answers with bytes, by (app, media id).
	fetches map[string]int
}

func newCSState() *csState {
	return &csState{
		sends: map[string][]time.Time{}, typingSince: map[string]time.Time{},
		messages: map[string][]CustomerMessage{}, typing: map[string][]TypingCommand{}, fetches: map[string]int{},
	}
}

// csDialect is how one platform (WeChat, or QQ in WeChat's shape) answers:
// its token check, injected failures and error format.
type csDialect struct {
	// tokenApp authenticates the access_token query parameter; it answers
	// the request itself (and returns nil) when the token is not valid.
	tokenApp func(c *fiber.Ctx) (*App, error)
	// injected answers an injected failure of app for api, if one is due.
	injected func(c *fiber.Ctx, app, api string) (bool, error)
	fail     func(c *fiber.Ctx, code int, msg string) error
}

// call authenticates a call to api and answers an injected failure of
// it, if one is due; it returns a nil app when it answered the request.
func (d csDialect) call(c *fiber.Ctx, api string) (*App, error) {
	a, err := d.tokenApp(c)
	if a == nil {
		return nil, err
	}
	if hit, err := d.injected(c, a.ID, api); hit {
		return nil, err
	}
	return a, nil
}

func (s *Sandbox) wechatCSDialect() csDialect {
	return csDialect{tokenApp: s.wechatTokenApp, injected: s.wechatInjected, fail: wechatError}
}

func (s *Sandbox) mountWeChatCS(r fiber.Router) {
	d := s.wechatCSDialect()
	s.mountCS(r, d)
	r.Get("/cgi-bin/media/get", func(c *fiber.Ctx) error { return s.csMediaGet(c, d) })
}

// mountCS adds custom/send, custom/typing and media/upload to r. The
// mini-program documentation also names /cgi-bin/message/custom/business/…
// for these; both paths are served.
func (s *Sandbox) mountCS(r fiber.Router, d csDialect) {
	send := func(c *fiber.Ctx) error { return s.csSend(c, d) }
	typing := func(c *fiber.Ctx) error { return s.csTyping(c, d) }
	r.Post("/cgi-bin/message/custom/send", send)
	r.Post("/cgi-bin/message/custom/business/send", send)
	r.Post("/cgi-bin/message/custom/typing", typing)
	r.Post("/cgi-bin/message/custom/business/typing", typing)
	r.Post("/cgi-bin/media/upload", func(c *fiber.Ctx) error { return s.csUpload(c, d) })
}

// mountCustomerServiceControl adds the control routes: what the platform
// received (WeChat and QQ apps), and token invalidation for QQ apps (the
// WeChat handler of the same path passes other apps on).
func (s *Sandbox) mountCustomerServiceControl(g fiber.Router) {
	g.Get("/customer-messages", s.handleCustomerMessages)
	g.Post("/tokens/invalidate", s.platformControl(QQ, s.handleQQInvalidateTokens))
}

// csSend is POST custom/send.
func (s *Sandbox) csSend(c *fiber.Ctx, d csDialect) error {
	a, err := d.tokenApp(c)
	if a == nil {
		return err
	}
	now := s.now()
	rec := CustomerMessage{App: a.ID, At: now, Body: append(json.RawMessage(nil), c.Body()...)}
	answer := func(code int, msg string) error {
		rec.ErrCode = code
		s.wechat.recordCustomerMessage(rec)
		if code == 0 {
			return c.JSON(fiber.Map{"errcode": 0, "errmsg": "ok"})
		}
		return d.fail(c, code, msg)
	}
	var body struct {
		ToUser          string                   `json:"touser"`
		MsgType         string                   `json:"msgtype"`
		Text            *CustomerText            `json:"text"`
		Image           *CustomerMedia           `json:"image"`
		Link            *CustomerLink            `json:"link"`
		MiniProgramPage *CustomerMiniProgramPage `json:"miniprogrampage"`
	}
	if err := json.Unmarshal(c.Body(), &body); err != nil {
		return answer(wechatErrDataFormat, "data format error")
	}
	rec.ToUser, rec.MsgType = body.ToUser, body.MsgType
	rec.Text, rec.Image, rec.Link, rec.MiniProgramPage = body.Text, body.Image, body.Link, body.MiniProgramPage
	if hit, err := d.injected(c, a.ID, csAPISend); hit {
		rec.ErrCode = answeredErrCode(c)
		s.wechat.recordCustomerMessage(rec)
		return err
	}
	if !csOpenIDRE.MatchString(body.ToUser) {
		return answer(csErrInvalidOpenID, "invalid openid")
	}
	switch body.MsgType {
	case "text":
		if body.Text == nil || body.Text.Content == "" {
			return answer(wechatErrDataFormat, "data format error: text.content is required")
		}
	case "image":
		if body.Image == nil || body.Image.MediaID == "" {
			return answer(wechatErrDataFormat, "data format error: image.media_id is required")
		}
		if !s.wechat.mediaValid(a.ID, body.Image.MediaID, now) {
			return answer(wechatErrMediaID, "invalid media_id")
		}
	case "link":
		if l := body.Link; l == nil || l.Title == "" || l.URL == "" {
			return answer(wechatErrDataFormat, "data format error: link.title and link.url are required")
		}
	case "miniprogrampage":
		p := body.MiniProgramPage
		if p == nil || p.Title == "" || p.PagePath == "" || p.ThumbMediaID == "" {
			return answer(wechatErrDataFormat, "data format error: miniprogrampage.title, pagepath and thumb_media_id are required")
		}
		if !s.wechat.mediaValid(a.ID, p.ThumbMediaID, now) {
			return answer(wechatErrMediaID, "invalid media_id")
		}
	default:
		return answer(csErrMsgType, "invalid message type")
	}
	if code := s.wechat.deliver(a.ID, body.ToUser, now); code != 0 {
		return answer(code, csErrorText(code))
	}
	return answer(0, "")
}

// answeredErrCode reads the errcode the simulator just wrote into c's
// response (an injected failure).
func answeredErrCode(c *fiber.Ctx) int {
	var ans struct {
		ErrCode int `json:"errcode"`
	}
	_ = json.Unmarshal(c.Response().Body(), &ans)
	return ans.ErrCode
}

func csErrorText(code int) string {
	if code == csErrQuotaExceeded {
		return "response count exceeds limit"
	}
	return "response out of time limit or subscription is canceled"
}

// replyCodeLocked is 0 when a message to (app, openid) may be delivered at
// now, else 45015 (no allowance has time left) or 45047 (none has messages
// left).
func (st *wechatState) replyCodeLocked(app, openid string, now time.Time) int {
	k := wechatKey(app, openid)
	a := st.activity[k]
	if a == nil {
		return csErrWindowClosed
	}
	timeLeft, messagesLeft := false, false
	for _, g := range []struct {
		from  time.Time
		lasts time.Duration
		limit int
	}{{a.LastMessageAt, csMessageWindow, csMessageLimit}, {a.EnteredSessionAt, csSessionWindow, csSessionLimit}} {
		if g.from.IsZero() || !now.Before(g.from.Add(g.lasts)) {
			continue
		}
		timeLeft = true
		used := 0
		for _, t := range st.cs.sends[k] {
			if !t.Before(g.from) {
				used++
			}
		}
		if used < g.limit {
			messagesLeft = true
		}
	}
	switch {
	case messagesLeft:
		return 0
	case timeLeft:
		return csErrQuotaExceeded
	}
	return csErrWindowClosed
}

// deliver counts a message to (app, openid) at now if the windows allow
// it, and cancels the typing indicator; it returns the errcode otherwise.
func (st *wechatState) deliver(app, openid string, now time.Time) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	if code := st.replyCodeLocked(app, openid, now); code != 0 {
		return code
	}
	k := wechatKey(app, openid)
	// Sends older than the longest window no longer count.
	kept := st.cs.sends[k][:0]
	for _, t := range st.cs.sends[k] {
		if now.Sub(t) < csMessageWindow {
			kept = append(kept, t)
		}
	}
	st.cs.sends[k] = append(kept, now)
	delete(st.cs.typingSince, k)
	return 0
}

func (st *wechatState) recordCustomerMessage(m CustomerMessage) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.cs.messages[m.App] = keepLast(st.cs.messages[m.App], m)
}

// keepLast appends v to list and keeps the last csKept.
func keepLast[T any](list []T, v T) []T {
	list = append(list, v)
	if len(list) > csKept {
		list = list[len(list)-csKept:]
	}
	return list
}

// mediaValid reports whether id is an unexpired media of app.
func (st *wechatState) mediaValid(app, id string, now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.mediaLocked(app, id, now) != nil
}

// mediaLocked returns media id of app if it has not expired at now, or
// nil. Callers hold st.mu.
func (st *wechatState) mediaLocked(app, id string, now time.Time) *wechatMedia {
	if m := st.media[id]; m != nil && m.app == app && !now.After(m.expires) {
		return m
	}
	return nil
}

// csTyping is POST custom/typing.
func (s *Sandbox) csTyping(c *fiber.Ctx, d csDialect) error {
	a, err := d.tokenApp(c)
	if a == nil {
		return err
	}
	now := s.now()
	var body struct {
		ToUser  string `json:"touser"`
		Command string `json:"command"`
	}
	if err := json.Unmarshal(c.Body(), &body); err != nil {
		return d.fail(c, wechatErrDataFormat, "data format error")
	}
	rec := TypingCommand{App: a.ID, ToUser: body.ToUser, Command: body.Command, At: now}
	if hit, err := d.injected(c, a.ID, csAPITyping); hit {
		rec.ErrCode = answeredErrCode(c)
		s.wechat.recordTyping(rec)
		return err
	}
	rec.ErrCode = s.wechat.typing(a.ID, body.ToUser, body.Command, now)
	s.wechat.recordTyping(rec)
	switch rec.ErrCode {
	case 0:
		return c.JSON(fiber.Map{"errcode": 0, "errmsg": "ok"})
	case csErrTypingCommand:
		return d.fail(c, rec.ErrCode, "invalid command")
	case csErrInvalidOpenID:
		return d.fail(c, rec.ErrCode, "invalid openid")
	case csErrTypingExchange:
		return d.fail(c, rec.ErrCode, "typing needs a message exchanged with the user in the last 30 seconds")
	case csErrAlreadyTyping:
		return d.fail(c, rec.ErrCode, "already typing")
	}
	return d.fail(c, rec.ErrCode, csErrorText(rec.ErrCode))
}

// typing applies a typing command and returns its errcode.
func (st *wechatState) typing(app, openid, command string, now time.Time) int {
	if command != "Typing" && command != "CancelTyping" {
		return csErrTypingCommand
	}
	if !csOpenIDRE.MatchString(openid) {
		return csErrInvalidOpenID
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	k := wechatKey(app, openid)
	if command == "CancelTyping" {
		delete(st.cs.typingSince, k)
		return 0
	}
	if code := st.replyCodeLocked(app, openid, now); code == csErrWindowClosed {
		return code
	}
	var last time.Time
	if a := st.activity[k]; a != nil {
		last = a.LastMessageAt
	}
	if sends := st.cs.sends[k]; len(sends) > 0 && sends[len(sends)-1].After(last) {
		last = sends[len(sends)-1]
	}
	if last.IsZero() || now.Sub(last) > csTypingExchange {
		return csErrTypingExchange
	}
	if since, ok := st.cs.typingSince[k]; ok && now.Sub(since) < csTypingLasts {
		return csErrAlreadyTyping
	}
	st.cs.typingSince[k] = now
	return 0
}

func (st *wechatState) recordTyping(t TypingCommand) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.cs.typing[t.App] = keepLast(st.cs.typing[t.App], t)
}

// csUpload is POST media/upload?type=image with the file in field "media".
func (s *Sandbox) csUpload(c *fiber.Ctx, d csDialect) error {
	a, err := d.call(c, csAPIUpload)
	if a == nil {
		return err
	}
	if c.Query("type") != "image" {
		return d.fail(c, csErrMediaType, "invalid media type")
	}
	fh, err := c.FormFile("media")
	if err != nil {
		return d.fail(c, csErrMediaMissing, "media data missing")
	}
	if fh.Size > csMaxImage {
		return d.fail(c, csErrImageSize, "invalid image size")
	}
	f, err := fh.Open()
	if err != nil {
		return d.fail(c, csErrMediaMissing, "media data missing")
	}
	data, err := io.ReadAll(io.LimitReader(f, csMaxImage+1))
	f.Close()
	if err != nil || len(data) == 0 {
		return d.fail(c, csErrMediaMissing, "media data missing")
	}
	if len(data) > csMaxImage {
		return d.fail(c, csErrImageSize, "invalid image size")
	}
	ct := http.DetectContentType(data)
	if ct != "image/png" && ct != "image/jpeg" && ct != "image/gif" {
		return d.fail(c, csErrFileType, "invalid file type")
	}
	id := s.storeWeChatMedia(a.ID, ct, data)
	return c.JSON(fiber.Map{"type": "image", "media_id": id, "created_at": s.now().Unix()})
}

// csMediaGet is GET media/get: the media's bytes, or 40007.
func (s *Sandbox) csMediaGet(c *fiber.Ctx, d csDialect) error {
	a, err := d.call(c, csAPIGet)
	if a == nil {
		return err
	}
	id := c.Query("media_id")
	st := s.wechat
	st.mu.Lock()
	m := st.mediaLocked(a.ID, id, s.now())
	if m != nil {
		st.cs.fetches[wechatKey(a.ID, id)]++
	}
	st.mu.Unlock()
	if m == nil {
		return d.fail(c, wechatErrMediaID, "invalid media_id")
	}
	c.Set(fiber.HeaderContentType, m.contentType)
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+id+`"`)
	return c.Send(m.data)
}

// CustomerMessages returns the custom/send calls app (minigate id)
// received, oldest first (the last 500).
func (s *Sandbox) CustomerMessages(app string) []CustomerMessage {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]CustomerMessage(nil), st.cs.messages[app]...)
}

// TypingCommands returns the custom/typing calls app received, oldest
// first (the last 500).
func (s *Sandbox) TypingCommands(app string) []TypingCommand {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]TypingCommand(nil), st.cs.typing[app]...)
}

// MediaFetches counts the media/get calls that downloaded media id of app.
func (s *Sandbox) MediaFetches(app, id string) int {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.cs.fetches[wechatKey(app, id)]
}

// handleCustomerMessages is GET /sandbox/apps/{app}/customer-messages:
// what the platform received from minigate for a WeChat or QQ app, and how
// often each of its media was downloaded.
func (s *Sandbox) handleCustomerMessages(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	if a.Platform != WeChat && a.Platform != QQ {
		return fiber.NewError(fiber.StatusBadRequest, "only WeChat and QQ apps have customer-service messages")
	}
	return c.JSON(fiber.Map{"messages": s.CustomerMessages(a.ID), "typing": s.TypingCommands(a.ID),
		"media_fetches": s.mediaFetchCounts(a.ID)})
}

// mediaFetchCounts returns MediaFetches for every media of app fetched
// at least once.
func (s *Sandbox) mediaFetchCounts(app string) map[string]int {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	out := map[string]int{}
	for k, n := range st.cs.fetches {
		if id, ok := strings.CutPrefix(k, wechatKey(app, "")); ok {
			out[id] = n
		}
	}
	return out
}
