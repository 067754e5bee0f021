package sandbox

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// QQ mini-program server API simulation under /sandbox/qq, with the real
// paths of https://api.q.qq.com below it: code2Session, getToken and
// customer service in WeChat's shape (qqcs.go). Errors
// are JSON {"errcode", "errmsg"} as on the real API (HTTP 200).

const (
	// qqTokenTTL is the lifetime getToken grants (expires_in).
	qqTokenTTL = 7200 * time.Second
	// qqTokenOverlap is how long a token stays valid after a newer one was
	// fetched for the same app.
	qqTokenOverlap = 5 * time.Minute
)

// QQ API errcodes the simulator answers with. QQ documents -1, 40029 and
// 45011 (code2Session) and 40001, 40002, 40013 (getToken); 40163 (code
// already used) and the token codes 40014/42001 are WeChat's, which QQ's API
// mirrors.
const (
	qqErrBadSecret    = 40001
	qqErrGrantType    = 40002
	qqErrBadAppID     = 40013
	qqErrInvalidToken = 40014
	qqErrInvalidCode  = 40029
	qqErrCodeUsed     = 40163
	qqErrTokenExpired = 42001
)

// QQError is a failure the simulator answers instead of handling a QQ API
// call, e.g. to exercise rate limits (45011), busy answers (-1) or high-risk
// users (40226).
type QQError struct {
	// API selects the call: jscode2session, getToken, custom/send,
	// custom/typing, media/upload or media/get; empty matches any.
	API     string
	ErrCode int
	ErrMsg  string
	// Times is how many calls fail (default 1).
	Times int
}

type qqState struct {
	mu sync.Mutex
	// tokens maps every token handed out and not yet expired to its app.
	tokens map[string]*qqToken
	// latest is each app's newest token (by minigate app id).
	latest   map[string]string
	failures injectedFailures[QQError] // by minigate app id
}

type qqToken struct {
	app        string // minigate app id
	validUntil time.Time
}

func newQQState() *qqState {
	return &qqState{tokens: map[string]*qqToken{}, latest: map[string]string{}}
}

func (s *Sandbox) mountQQ(r fiber.Router) {
	r.Get("/sns/jscode2session", s.qqCode2Session)
	r.Get("/api/getToken", s.qqGetToken)
	s.mountQQCS(r)
}

// FailQQ makes the next e.Times calls (default 1) of app (minigate id) to
// e.API answer e's errcode instead of being handled.
func (s *Sandbox) FailQQ(app string, e QQError) {
	s.qq.failures.add(app, e.API, e.Times, e)
}

// qqInjected answers an injected failure of app for api, if there is one;
// it reports whether it did.
func (s *Sandbox) qqInjected(c *fiber.Ctx, app, api string) (bool, error) {
	hit, ok := s.qq.failures.take(app, api)
	if !ok {
		return false, nil
	}
	return true, qqError(c, hit.ErrCode, hit.ErrMsg)
}

func qqError(c *fiber.Ctx, code int, msg string) error {
	return c.JSON(fiber.Map{"errcode": code, "errmsg": msg})
}

// qqApp authenticates appid + secret from the query.
func (s *Sandbox) qqApp(c *fiber.Ctx) (*App, error) {
	a := s.appByAppID(QQ, c.Query("appid"))
	if a == nil {
		return nil, qqError(c, qqErrBadAppID, "invalid appid")
	}
	if c.Query("secret") != a.AppSecret {
		return nil, qqError(c, qqErrBadSecret, "invalid secret")
	}
	return a, nil
}

// qqCode2Session is GET /sns/jscode2session.
func (s *Sandbox) qqCode2Session(c *fiber.Ctx) error {
	a, errAnswered := s.qqApp(c)
	if a == nil {
		return errAnswered
	}
	if hit, err := s.qqInjected(c, a.ID, "jscode2session"); hit {
		return err
	}
	if c.Query("grant_type") != "authorization_code" {
		return qqError(c, qqErrGrantType, "invalid grant_type")
	}
	name, res := s.redeemCode(a, c.Query("js_code"), "login")
	switch res {
	case codeInvalid:
		return qqError(c, qqErrInvalidCode, "invalid code")
	case codeUsed:
		return qqError(c, qqErrCodeUsed, "code been used")
	}
	u := s.User(a, name)
	key := qqSessionKey()
	// Kept with WeChat's, so SessionKey and /users/{name}/encrypted-data
	// work for QQ apps too (QQ open data is encrypted as WeChat's).
	s.wechat.rememberSessionKey(a.ID, name, key)
	out := fiber.Map{"errcode": 0, "errmsg": "", "openid": u.OpenID, "session_key": key}
	if u.UnionID != "" {
		out["unionid"] = u.UnionID
	}
	return c.JSON(out)
}

// qqSessionKey returns a fresh session_key: 16 random bytes, base64, as
// WeChat's (QQ's open data is decrypted the same way).
func qqSessionKey() string {
	b := make([]byte, 16)
	// crypto/rand.Read never returns an error (it panics on failure).
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// qqGetToken is GET /api/getToken. Each fetch mints a new token; the app's
// previous token stays valid for qqTokenOverlap more, then is invalid.
func (s *Sandbox) qqGetToken(c *fiber.Ctx) error {
	if c.Query("grant_type") != "client_credential" {
		return qqError(c, qqErrGrantType, "invalid grant_type")
	}
	a, errAnswered := s.qqApp(c)
	if a == nil {
		return errAnswered
	}
	if hit, err := s.qqInjected(c, a.ID, "getToken"); hit {
		return err
	}
	now := s.now()
	tok := randomHex(32)
	st := s.qq
	st.mu.Lock()
	for v, t := range st.tokens {
		if !now.Before(t.validUntil) {
			delete(st.tokens, v)
		}
	}
	if prev := st.tokens[st.latest[a.ID]]; prev != nil && prev.validUntil.After(now.Add(qqTokenOverlap)) {
		prev.validUntil = now.Add(qqTokenOverlap)
	}
	st.tokens[tok] = &qqToken{app: a.ID, validUntil: now.Add(qqTokenTTL)}
	st.latest[a.ID] = tok
	st.mu.Unlock()
	return c.JSON(fiber.Map{"access_token": tok, "expires_in": int(qqTokenTTL.Seconds())})
}

// qqTokenApp resolves an access_token for the QQ APIs that take one: the
// app it was issued to, or the errcode to answer (40014 unknown, 42001
// expired or superseded). Expired tokens are forgotten on the next fetch,
// so an old token reads as unknown from then on, as it would at QQ.
func (s *Sandbox) qqTokenApp(token string) (*App, int) {
	st := s.qq
	st.mu.Lock()
	t := st.tokens[token]
	st.mu.Unlock()
	switch {
	case t == nil:
		return nil, qqErrInvalidToken
	case !s.now().Before(t.validUntil):
		return nil, qqErrTokenExpired
	}
	a := s.App(t.app)
	if a == nil {
		return nil, qqErrInvalidToken
	}
	return a, 0
}
