package sandbox

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// WeChat mini-program server API simulation under /sandbox/wechat, with the
// real paths of https://api.weixin.qq.com below it: jscode2session, the
// stable and classic access tokens, getuserphonenumber, and customer
// service (custom/send, custom/typing, media/upload, media/get: wechatcs.go). Errors
// are JSON {"errcode", "errmsg"} with HTTP 200, as on the real API.

const (
	// WeChatTokenTTL is the lifetime of the access tokens the simulator
	// issues (expires_in 7200).
	WeChatTokenTTL = 2 * time.Hour
	// wechatTokenRenewal: the stable token is renewed by a normal call in
	// its last five minutes; a classic token stays valid this long after a
	// newer one was fetched.
	wechatTokenRenewal = 5 * time.Minute
	// wechatTokenKept is how long expired tokens are remembered, so they
	// answer 42001 (expired) rather than 40001 (unknown).
	wechatTokenKept = 24 * time.Hour
	// wechatLoginLimit is jscode2session's limit per user per minute.
	wechatLoginLimit = 100
	// wechatMediaTTL is how long temporary media stay downloadable.
	wechatMediaTTL = 3 * 24 * time.Hour
)

// WeChat API errcodes the simulator answers with.
const (
	wechatErrInvalidToken = 40001
	wechatErrGrantType    = 40002
	wechatErrMediaID      = 40007
	wechatErrBadAppID     = 40013
	wechatErrInvalidCode  = 40029
	wechatErrBadSecret    = 40125
	wechatErrCodeUsed     = 40163
	wechatErrHighRisk     = 40226
	wechatErrMissingCode  = 41008
	wechatErrTokenExpired = 42001
	wechatErrLoginLimit   = 45011
	wechatErrDataFormat   = 47001
)

// API names that WeChatError.API selects.
const (
	wechatAPIJSCode2Sess = "jscode2session"
	wechatAPIStableToken = "stable_token"
	wechatAPIToken       = "token"
	wechatAPIPhoneNumber = "getuserphonenumber"
)

const (
	// wechatRiskyUserPrefix marks simulated users WeChat refuses (40226).
	wechatRiskyUserPrefix = "risky-"
	// wechatSessionKeyLength is the session_key's length in bytes.
	wechatSessionKeyLength = 16
	// wechatStaleKeysKept is how many old session keys of a user the
	// simulator remembers, to tell an expired key from a wrong one.
	wechatStaleKeysKept = 8
)

// WeChatError is a failure the simulator answers instead of handling a
// WeChat API call (e.g. -1, busy).
type WeChatError struct {
	// API selects the call: jscode2session, stable_token, token,
	// getuserphonenumber, custom/send, custom/typing, media/upload or
	// media/get; empty matches any.
	API     string
	ErrCode int
	ErrMsg  string
	// Times is how many calls fail (default 1).
	Times int
}

// TokenStats counts one WeChat app's access-token traffic at the simulator.
type TokenStats struct {
	// Issued counts new tokens (stable and classic).
	Issued int `json:"issued"`
	// ForceRefreshes counts stable_token calls with force_refresh.
	ForceRefreshes int `json:"force_refreshes"`
	// Invalidations counts POST /sandbox/apps/{app}/tokens/invalidate.
	Invalidations int `json:"invalidations"`
	// Rejected counts API calls refused for an invalid or expired token.
	Rejected int `json:"rejected"`
}

// Activity is what the simulated platform knows about one user's
// customer-service conversation with an app: when they last sent a message
// and when they last entered the customer-service session. Zero times mean
// never.
type Activity struct {
	LastMessageAt    time.Time `json:"last_message_at"`
	EnteredSessionAt time.Time `json:"entered_session_at"`
}

// wechatState is the WeChat API's platform-side state.
type wechatState struct {
	mu sync.Mutex
	// tokens maps every token handed out (until wechatTokenKept after its
	// expiry) to its record.
	tokens map[string]*wechatToken
	// stable and classic are each app's current tokens (by minigate app id).
	stable  map[string]*wechatToken
	classic map[string]*wechatToken
	stats   map[string]*TokenStats
	// logins holds each (app, user)'s login times in the last minute.
	logins map[string][]time.Time
	// sessionKeys holds each (app, user)'s current session_key; a user
	// whose key expired has none.
	sessionKeys map[string]string
	// staleKeys holds each (app, user)'s superseded and expired keys, the
	// newest last (at most wechatStaleKeysKept).
	staleKeys map[string][]string
	// names maps (app, openid) to the simulated user's name.
	names map[string]string
	// activity is keyed by (app, openid).
	activity map[string]*Activity
	media    map[string]*wechatMedia
	failures injectedFailures[WeChatError] // by minigate app id
	// cs is the customer-service state (WeChat and QQ apps).
	cs *csState
}

type wechatToken struct {
	app     string // minigate app id
	value   string
	expires time.Time
	// revokedAt is when the token stops working before its expiry (zero:
	// never).
	revokedAt time.Time
}

func (t *wechatToken) validAt(now time.Time) bool {
	return now.Before(t.expires) && (t.revokedAt.IsZero() || now.Before(t.revokedAt))
}

type wechatMedia struct {
	app         string
	contentType string
	data        []byte
	expires     time.Time
}

func newWeChatState() *wechatState {
	return &wechatState{
		tokens: map[string]*wechatToken{}, stable: map[string]*wechatToken{}, classic: map[string]*wechatToken{},
		stats: map[string]*TokenStats{}, logins: map[string][]time.Time{}, sessionKeys: map[string]string{},
		staleKeys: map[string][]string{}, names: map[string]string{},
		activity: map[string]*Activity{}, media: map[string]*wechatMedia{},
		cs: newCSState(),
	}
}

func (s *Sandbox) mountWeChat(r fiber.Router) {
	r.Get("/sns/jscode2session", s.wechatCode2Session)
	r.Post("/cgi-bin/stable_token", s.wechatStableToken)
	r.Get("/cgi-bin/token", s.wechatClassicToken)
	r.Post("/wxa/business/getuserphonenumber", s.wechatPhoneNumber)
	s.mountWeChatCS(r)
	s.mountXPay(r)
}

// mountWeChatControl adds the WeChat control routes to the per-app control
// group (/sandbox/apps/:app). Routes that are WeChat-only pass other apps
// on to the next handler, so another platform may serve the same path.
func (s *Sandbox) mountWeChatControl(g fiber.Router) {
	g.Post("/tokens/invalidate", s.platformControl(WeChat, s.handleWeChatInvalidateTokens))
	g.Get("/tokens", s.platformControl(WeChat, s.handleWeChatTokenStats))
	g.Post("/users/:name/encrypted-data", s.handleWeChatEncryptedData)
	s.mountCustomerServiceControl(g)
	s.mountXPayControl(g)
}

func wechatError(c *fiber.Ctx, code int, msg string) error {
	return c.JSON(fiber.Map{"errcode": code, "errmsg": msg + " rid: " + randomHex(6)})
}

func wechatKey(a, b string) string { return a + "\x00" + b }

// FailWeChat makes the next e.Times calls (default 1) of app (minigate id)
// to e.API answer e's errcode instead of being handled.
func (s *Sandbox) FailWeChat(app string, e WeChatError) {
	s.wechat.failures.add(app, e.API, e.Times, e)
}

// wechatInjected answers an injected failure of app for api, if there is
// one; it reports whether it did.
func (s *Sandbox) wechatInjected(c *fiber.Ctx, app, api string) (bool, error) {
	hit, ok := s.wechat.failures.take(app, api)
	if !ok {
		return false, nil
	}
	msg := hit.ErrMsg
	if msg == "" {
		msg = "injected failure"
	}
	return true, wechatError(c, hit.ErrCode, msg)
}

// wechatCredentials authenticates appid + secret. It answers the request
// itself (and returns nil) when they are wrong.
func (s *Sandbox) wechatCredentials(c *fiber.Ctx, appID, secret string) (*App, error) {
	a := s.appByAppID(WeChat, appID)
	if a == nil {
		return nil, wechatError(c, wechatErrBadAppID, "invalid appid")
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(a.AppSecret)) != 1 {
		return nil, wechatError(c, wechatErrBadSecret, "invalid appsecret")
	}
	return a, nil
}

// wechatCode2Session is GET /sns/jscode2session.
func (s *Sandbox) wechatCode2Session(c *fiber.Ctx) error {
	a, err := s.wechatCredentials(c, c.Query("appid"), c.Query("secret"))
	if a == nil {
		return err
	}
	if hit, err := s.wechatInjected(c, a.ID, wechatAPIJSCode2Sess); hit {
		return err
	}
	if c.Query("grant_type") != "authorization_code" {
		return wechatError(c, wechatErrGrantType, "invalid grant_type")
	}
	code := c.Query("js_code")
	if code == "" {
		return wechatError(c, wechatErrMissingCode, "missing code")
	}
	name, res := s.redeemCode(a, code, "login")
	switch res {
	case codeInvalid:
		return wechatError(c, wechatErrInvalidCode, "invalid code")
	case codeUsed:
		return wechatError(c, wechatErrCodeUsed, "code been used")
	}
	if strings.HasPrefix(name, wechatRiskyUserPrefix) {
		return wechatError(c, wechatErrHighRisk, "high risk user")
	}
	if !s.wechat.allowLogin(a.ID, name, s.now()) {
		return wechatError(c, wechatErrLoginLimit, "api minute-quota reach limit, retry next minute")
	}
	u := s.User(a, name)
	key := make([]byte, wechatSessionKeyLength)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	sessionKey := base64.StdEncoding.EncodeToString(key)
	s.wechat.rememberSessionKey(a.ID, name, sessionKey)
	s.wechat.rememberName(a.ID, u.OpenID, name)
	out := fiber.Map{"openid": u.OpenID, "session_key": sessionKey}
	if u.UnionID != "" {
		out["unionid"] = u.UnionID
	}
	return c.JSON(out)
}

// allowLogin counts a login of (app, user) at now and reports whether it is
// within wechatLoginLimit per minute.
func (st *wechatState) allowLogin(app, user string, now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	k := wechatKey(app, user)
	recent := st.logins[k][:0]
	for _, t := range st.logins[k] {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	if len(recent) >= wechatLoginLimit {
		st.logins[k] = recent
		return false
	}
	st.logins[k] = append(recent, now)
	return true
}

// rememberSessionKey records user's latest session_key for app (minigate
// id). The QQ simulation may record its logins here too, so that
// /users/{name}/encrypted-data works for QQ apps.
func (st *wechatState) rememberSessionKey(app, user, key string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.retireKeyLocked(wechatKey(app, user))
	st.sessionKeys[wechatKey(app, user)] = key
}

// retireKeyLocked moves the current session key of k (app, user) to its
// stale keys. Callers hold st.mu.
func (st *wechatState) retireKeyLocked(k string) {
	old, ok := st.sessionKeys[k]
	if !ok {
		return
	}
	delete(st.sessionKeys, k)
	stale := append(st.staleKeys[k], old)
	if len(stale) > wechatStaleKeysKept {
		stale = stale[len(stale)-wechatStaleKeysKept:]
	}
	st.staleKeys[k] = stale
}

// rememberName records that openid is user name's in app.
func (st *wechatState) rememberName(app, openid, name string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.names[wechatKey(app, openid)] = name
}

// ExpireSessionKey ends user name's current session_key for app (minigate
// id), as WeChat does after a while without use or when the user logs in
// elsewhere: calls signed with it are refused as expired until the user
// logs in again. It reports whether there was a key to expire.
func (s *Sandbox) ExpireSessionKey(app, name string) bool {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	k := wechatKey(app, name)
	_, ok := st.sessionKeys[k]
	st.retireKeyLocked(k)
	return ok
}

type wechatStableTokenRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

// wechatStableToken is POST /cgi-bin/stable_token: in normal mode the
// current token is handed out again until its last five minutes; with
// force_refresh a new one replaces it at once.
func (s *Sandbox) wechatStableToken(c *fiber.Ctx) error {
	var req wechatStableTokenRequest
	if err := json.Unmarshal(c.Body(), &req); err != nil {
		return wechatError(c, wechatErrDataFormat, "data format error")
	}
	a, err := s.wechatCredentials(c, req.AppID, req.Secret)
	if a == nil {
		return err
	}
	if hit, err := s.wechatInjected(c, a.ID, wechatAPIStableToken); hit {
		return err
	}
	if req.GrantType != "client_credential" {
		return wechatError(c, wechatErrGrantType, "invalid grant_type")
	}
	now := s.now()
	t := s.wechat.stableToken(a.ID, req.ForceRefresh, now)
	return c.JSON(fiber.Map{"access_token": t.value, "expires_in": int(t.expires.Sub(now).Seconds())})
}

// wechatClassicToken is GET /cgi-bin/token: every call issues a new token;
// the previous one keeps working for five more minutes.
func (s *Sandbox) wechatClassicToken(c *fiber.Ctx) error {
	a, err := s.wechatCredentials(c, c.Query("appid"), c.Query("secret"))
	if a == nil {
		return err
	}
	if hit, err := s.wechatInjected(c, a.ID, wechatAPIToken); hit {
		return err
	}
	if c.Query("grant_type") != "client_credential" {
		return wechatError(c, wechatErrGrantType, "invalid grant_type")
	}
	now := s.now()
	t := s.wechat.classicToken(a.ID, now)
	return c.JSON(fiber.Map{"access_token": t.value, "expires_in": int(WeChatTokenTTL.Seconds())})
}

func (st *wechatState) statsLocked(app string) *TokenStats {
	ts := st.stats[app]
	if ts == nil {
		ts = &TokenStats{}
		st.stats[app] = ts
	}
	return ts
}

// issueLocked makes a new token for app and forgets long-expired ones.
func (st *wechatState) issueLocked(app string, now time.Time) *wechatToken {
	for v, t := range st.tokens {
		if now.Sub(t.expires) > wechatTokenKept {
			delete(st.tokens, v)
		}
	}
	t := &wechatToken{app: app, value: "sbx_" + randomHex(24), expires: now.Add(WeChatTokenTTL)}
	st.tokens[t.value] = t
	st.statsLocked(app).Issued++
	return t
}

func (st *wechatState) stableToken(app string, force bool, now time.Time) *wechatToken {
	st.mu.Lock()
	defer st.mu.Unlock()
	cur := st.stable[app]
	if force {
		st.statsLocked(app).ForceRefreshes++
		if cur != nil && cur.validAt(now) {
			cur.revokedAt = now
		}
	} else if cur != nil && cur.validAt(now) && cur.expires.Sub(now) > wechatTokenRenewal {
		return cur
	}
	t := st.issueLocked(app, now)
	st.stable[app] = t
	return t
}

func (st *wechatState) classicToken(app string, now time.Time) *wechatToken {
	st.mu.Lock()
	defer st.mu.Unlock()
	if cur := st.classic[app]; cur != nil && cur.validAt(now) {
		if end := now.Add(wechatTokenRenewal); cur.revokedAt.IsZero() || end.Before(cur.revokedAt) {
			cur.revokedAt = end
		}
	}
	t := st.issueLocked(app, now)
	st.classic[app] = t
	return t
}

// checkToken returns the app (minigate id) of a valid token, or the errcode
// to answer: 40001 unknown or invalidated, 42001 expired.
func (st *wechatState) checkToken(value string, now time.Time) (string, int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.tokens[value]
	switch {
	case t == nil:
		return "", wechatErrInvalidToken
	case !t.revokedAt.IsZero() && !now.Before(t.revokedAt):
		st.statsLocked(t.app).Rejected++
		return "", wechatErrInvalidToken
	case !now.Before(t.expires):
		st.statsLocked(t.app).Rejected++
		return "", wechatErrTokenExpired
	}
	return t.app, 0
}

// wechatTokenApp authenticates the access_token query parameter; it answers
// the request itself (and returns nil) when the token is not valid.
func (s *Sandbox) wechatTokenApp(c *fiber.Ctx) (*App, error) {
	appID, code := s.wechat.checkToken(c.Query("access_token"), s.now())
	if code == wechatErrTokenExpired {
		return nil, wechatError(c, code, "access_token expired")
	}
	a := s.App(appID)
	if code != 0 || a == nil {
		return nil, wechatError(c, wechatErrInvalidToken, "invalid credential, access_token is invalid or not latest")
	}
	return a, nil
}

// InvalidateWeChatTokens makes app's (minigate id) current access tokens
// invalid at once, as when another party force-refreshed them: the next API
// call with one of them answers 40001.
func (s *Sandbox) InvalidateWeChatTokens(app string) {
	st := s.wechat
	now := s.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, t := range []*wechatToken{st.stable[app], st.classic[app]} {
		if t != nil && t.validAt(now) {
			t.revokedAt = now
		}
	}
	st.statsLocked(app).Invalidations++
}

// WeChatTokenStats returns app's (minigate id) access-token counters.
func (s *Sandbox) WeChatTokenStats(app string) TokenStats {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	return *st.statsLocked(app)
}

func (s *Sandbox) handleWeChatInvalidateTokens(c *fiber.Ctx, a *App) error {
	s.InvalidateWeChatTokens(a.ID)
	return c.JSON(s.WeChatTokenStats(a.ID))
}

func (s *Sandbox) handleWeChatTokenStats(c *fiber.Ctx, a *App) error {
	return c.JSON(s.WeChatTokenStats(a.ID))
}

// wechatPhoneNumber is POST /wxa/business/getuserphonenumber.
func (s *Sandbox) wechatPhoneNumber(c *fiber.Ctx) error {
	a, err := s.wechatTokenApp(c)
	if a == nil {
		return err
	}
	if hit, err := s.wechatInjected(c, a.ID, wechatAPIPhoneNumber); hit {
		return err
	}
	var req struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(c.Body(), &req); err != nil {
		return wechatError(c, wechatErrDataFormat, "data format error")
	}
	if req.Code == "" {
		return wechatError(c, wechatErrInvalidCode, "invalid code")
	}
	name, res := s.redeemCode(a, req.Code, "phone")
	switch res {
	case codeInvalid:
		return wechatError(c, wechatErrInvalidCode, "invalid code")
	case codeUsed:
		return wechatError(c, wechatErrCodeUsed, "code been used")
	}
	u := s.User(a, name)
	return c.JSON(fiber.Map{"errcode": 0, "errmsg": "ok", "phone_info": fiber.Map{
		"phoneNumber": u.Phone, "purePhoneNumber": u.Phone, "countryCode": "86",
		"watermark": fiber.Map{"timestamp": s.now().Unix(), "appid": a.AppID},
	}})
}

// storeWeChatMedia keeps data as a temporary media of app and returns its
// media_id.
func (s *Sandbox) storeWeChatMedia(app, contentType string, data []byte) string {
	id := "sbxmedia_" + randomHex(16)
	st := s.wechat
	now := s.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, m := range st.media {
		if now.After(m.expires) {
			delete(st.media, k)
		}
	}
	st.media[id] = &wechatMedia{app: app, contentType: contentType, data: data, expires: now.Add(wechatMediaTTL)}
	return id
}

// samplePNG is the picture a simulated user sends when a push names no
// media: a 2×2 PNG.
func samplePNG() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	img.Set(0, 0, color.RGBA{R: 7, G: 193, B: 96, A: 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic("sandbox: png: " + err.Error())
	}
	return buf.Bytes()
}

// recordActivity notes a user message (or, for the
// user_enter_tempsession event, the user entering the session) at now.
func (st *wechatState) recordActivity(app, openid, msgType, event string, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	k := wechatKey(app, openid)
	a := st.activity[k]
	if a == nil {
		a = &Activity{}
		st.activity[k] = a
	}
	switch {
	case msgType == "event" && event == "user_enter_tempsession":
		a.EnteredSessionAt = now
	case msgType != "event":
		a.LastMessageAt = now
	}
}

// WeChatActivity returns what the platform knows about openid's
// conversation with app (minigate id).
func (s *Sandbox) WeChatActivity(app, openid string) Activity {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	if a := st.activity[wechatKey(app, openid)]; a != nil {
		return *a
	}
	return Activity{}
}

// WeChatEncryptedUserData returns user name's data as the mini-program
// receives it from wx.getUserInfo for app (minigate id): JSON with a
// watermark, AES-128-CBC encrypted with the user's latest session_key and a
// random IV, both base64. The user must have logged in.
func (s *Sandbox) WeChatEncryptedUserData(app, name string) (encryptedData, iv string, err error) {
	a := s.App(app)
	if a == nil {
		return "", "", fmt.Errorf("sandbox: unknown app %q", app)
	}
	st := s.wechat
	st.mu.Lock()
	sessionKey := st.sessionKeys[wechatKey(app, name)]
	st.mu.Unlock()
	if sessionKey == "" {
		return "", "", fmt.Errorf("sandbox: user %q has not logged in to %s", name, app)
	}
	key, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil {
		return "", "", fmt.Errorf("sandbox: session key: %w", err)
	}
	u := s.User(a, name)
	data := map[string]any{
		"openId": u.OpenID, "nickName": name, "gender": 0, "language": "zh_CN",
		"city": "", "province": "", "country": "", "avatarUrl": "",
		"watermark": map[string]any{"appid": a.AppID, "timestamp": s.now().Unix()},
	}
	if u.UnionID != "" {
		data["unionId"] = u.UnionID
	}
	plain, err := json.Marshal(data)
	if err != nil {
		return "", "", err
	}
	ivb := make([]byte, aes.BlockSize)
	if _, err := rand.Read(ivb); err != nil {
		return "", "", err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", "", fmt.Errorf("sandbox: session key: %w", err)
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, ivb).CryptBlocks(plain, plain)
	return base64.StdEncoding.EncodeToString(plain), base64.StdEncoding.EncodeToString(ivb), nil
}

func (s *Sandbox) handleWeChatEncryptedData(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	enc, iv, err := s.WeChatEncryptedUserData(a.ID, c.Params("name"))
	if err != nil {
		return fiber.NewError(fiber.StatusConflict, err.Error())
	}
	return c.JSON(fiber.Map{"encrypted_data": enc, "iv": iv})
}
