package sandbox

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/silenceper/wechat/v2/miniprogram/encryptor"
	"github.com/silenceper/wechat/v2/util"
)

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type wechatSim struct {
	s     *Sandbox
	h     *fiber.App
	clock *testClock
	app   *App
}

// newWeChatSim returns a simulator with one WeChat app (callbacks to
// callbackBase, when given) on a settable clock.
func newWeChatSim(t *testing.T, spec AppSpec) *wechatSim {
	t.Helper()
	clock := &testClock{now: time.Unix(1714036504, 0)}
	s := New(Options{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if spec.ID == "" {
		spec.ID = "wx-test"
	}
	if spec.Platform == "" {
		spec.Platform = WeChat
	}
	a, _, err := NewAppPair(spec)
	if err != nil {
		t.Fatal(err)
	}
	s.AddApp(a)
	return &wechatSim{s: s, h: s.Handler(), clock: clock, app: a}
}

// call sends a request to the simulator's handler and decodes the JSON answer.
func (w *wechatSim) call(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.h.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: status %d: %s", method, path, resp.StatusCode, raw)
	}
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %q: %v", method, path, raw, err)
	}
	return out
}

func errcode(m map[string]any) int {
	f, _ := m["errcode"].(float64)
	return int(f)
}

func (w *wechatSim) mint(t *testing.T, user, kind string) string {
	t.Helper()
	path := "/apps/" + w.app.ID + "/users/" + user + "/code"
	if kind == "phone" {
		path = "/apps/" + w.app.ID + "/users/" + user + "/phone-code"
	}
	return w.call(t, http.MethodPost, path, nil)["code"].(string)
}

func (w *wechatSim) login(t *testing.T, appID, secret, code string) map[string]any {
	t.Helper()
	q := url.Values{"appid": {appID}, "secret": {secret}, "js_code": {code}, "grant_type": {"authorization_code"}}
	return w.call(t, http.MethodGet, "/wechat/sns/jscode2session?"+q.Encode(), nil)
}

func (w *wechatSim) stableToken(t *testing.T, force bool) string {
	t.Helper()
	out := w.call(t, http.MethodPost, "/wechat/cgi-bin/stable_token", map[string]any{
		"grant_type": "client_credential", "appid": w.app.AppID, "secret": w.app.AppSecret, "force_refresh": force,
	})
	tok, _ := out["access_token"].(string)
	if tok == "" {
		t.Fatalf("stable_token: %v", out)
	}
	return tok
}

func (w *wechatSim) phone(t *testing.T, token, code string) map[string]any {
	t.Helper()
	return w.call(t, http.MethodPost, "/wechat/wxa/business/getuserphonenumber?access_token="+url.QueryEscape(token),
		map[string]string{"code": code})
}

func TestWeChatSignatureVector(t *testing.T) {
	t.Parallel()
	// protocols.md §1: the published URL-verification vector.
	if got := weChatPushSign("AAAAA", "1714036504", "1514711492"); got != "f464b24fc39322e44b38aa78f5edd27bd1441696" {
		t.Fatalf("signature = %s", got)
	}
}

func TestWeChatSealDecryptsWithSilenceper(t *testing.T) {
	t.Parallel()
	key := randomAESKey()
	for n := 0; n <= 70; n++ {
		msg := bytes.Repeat([]byte{'m'}, n)
		ct, err := sealWeChatPush(key, "wx1234567890abcdef", msg)
		if err != nil {
			t.Fatal(err)
		}
		if len(ct)%32 != 0 {
			t.Fatalf("len(msg)=%d: ciphertext length %d is not a multiple of 32", n, len(ct))
		}
		_, got, err := util.DecryptMsg("wx1234567890abcdef", base64.StdEncoding.EncodeToString(ct), key)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("len(msg)=%d: silenceper decrypt = %q, %v", n, got, err)
		}
		if _, _, err := util.DecryptMsg("wxother", base64.StdEncoding.EncodeToString(ct), key); err == nil {
			t.Fatalf("len(msg)=%d: silenceper accepted a foreign app id", n)
		}
	}
}

func TestWeChatCode2Session(t *testing.T) {
	t.Parallel()
	w := newWeChatSim(t, AppSpec{UnionScope: "brand"})
	other := newWeChatSim(t, AppSpec{ID: "wx-other"})
	w.s.AddApp(other.app)

	code := w.mint(t, "alice", "login")
	out := w.login(t, w.app.AppID, w.app.AppSecret, code)
	alice := w.s.User(w.app, "alice")
	if out["openid"] != alice.OpenID || out["unionid"] != alice.UnionID || alice.UnionID == "" {
		t.Fatalf("login = %v, want openid %s unionid %s", out, alice.OpenID, alice.UnionID)
	}
	key, _ := base64.StdEncoding.DecodeString(out["session_key"].(string))
	if len(key) != 16 {
		t.Fatalf("session_key decodes to %d bytes", len(key))
	}

	tests := []struct {
		name   string
		appID  string
		secret string
		code   func() string
		want   int
	}{
		{"used code", w.app.AppID, w.app.AppSecret, func() string { return code }, 40163},
		{"unknown code", w.app.AppID, w.app.AppSecret, func() string { return "nope" }, 40029},
		{"phone code", w.app.AppID, w.app.AppSecret, func() string { return w.mint(t, "bob", "phone") }, 40029},
		{"other app's code", w.app.AppID, w.app.AppSecret, func() string {
			c, err := w.s.MintCode(other.app.ID, "bob", "login")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, 40029},
		{"risky user", w.app.AppID, w.app.AppSecret, func() string { return w.mint(t, "risky-mallory", "login") }, 40226},
		{"wrong secret", w.app.AppID, "wrong", func() string { return w.mint(t, "bob", "login") }, 40125},
		{"unknown appid", "wxunknown", w.app.AppSecret, func() string { return w.mint(t, "bob", "login") }, 40013},
		{"missing code", w.app.AppID, w.app.AppSecret, func() string { return "" }, 41008},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errcode(w.login(t, tt.appID, tt.secret, tt.code())); got != tt.want {
				t.Fatalf("errcode = %d, want %d", got, tt.want)
			}
		})
	}

	t.Run("expired code", func(t *testing.T) {
		c := w.mint(t, "carol", "login")
		w.clock.Advance(CodeTTL + time.Second)
		if got := errcode(w.login(t, w.app.AppID, w.app.AppSecret, c)); got != 40029 {
			t.Fatalf("errcode = %d, want 40029", got)
		}
	})
	t.Run("no unionid without a union scope", func(t *testing.T) {
		out := other.login(t, other.app.AppID, other.app.AppSecret, other.mint(t, "dave", "login"))
		if _, ok := out["unionid"]; ok || out["openid"] != other.s.User(other.app, "dave").OpenID {
			t.Fatalf("login = %v", out)
		}
	})
}

func TestWeChatLoginRateLimit(t *testing.T) {
	t.Parallel()
	w := newWeChatSim(t, AppSpec{})
	for i := range wechatLoginLimit {
		if out := w.login(t, w.app.AppID, w.app.AppSecret, w.mint(t, "eve", "login")); out["openid"] == nil {
			t.Fatalf("login %d: %v", i, out)
		}
	}
	if got := errcode(w.login(t, w.app.AppID, w.app.AppSecret, w.mint(t, "eve", "login"))); got != 45011 {
		t.Fatalf("login %d: errcode %d, want 45011", wechatLoginLimit+1, got)
	}
	if out := w.login(t, w.app.AppID, w.app.AppSecret, w.mint(t, "frank", "login")); out["openid"] == nil {
		t.Fatalf("another user is limited too: %v", out)
	}
	w.clock.Advance(time.Minute)
	if out := w.login(t, w.app.AppID, w.app.AppSecret, w.mint(t, "eve", "login")); out["openid"] == nil {
		t.Fatalf("still limited a minute later: %v", out)
	}
}

func TestWeChatTokensAndPhone(t *testing.T) {
	t.Parallel()
	w := newWeChatSim(t, AppSpec{})
	alice := w.s.User(w.app, "alice")

	tok := w.stableToken(t, false)
	if again := w.stableToken(t, false); again != tok {
		t.Fatalf("normal-mode stable_token changed the token")
	}
	out := w.phone(t, tok, w.mint(t, "alice", "phone"))
	info, _ := out["phone_info"].(map[string]any)
	wm, _ := info["watermark"].(map[string]any)
	if errcode(out) != 0 || info["phoneNumber"] != alice.Phone || info["countryCode"] != "86" || wm["appid"] != w.app.AppID {
		t.Fatalf("phone = %v", out)
	}

	steps := []struct {
		name  string
		setup func() (token, code string)
		want  int
	}{
		{"used phone code", func() (string, string) {
			c := w.mint(t, "alice", "phone")
			w.phone(t, tok, c)
			return tok, c
		}, 40163},
		{"login code", func() (string, string) { return tok, w.mint(t, "alice", "login") }, 40029},
		{"unknown token", func() (string, string) { return "forged", w.mint(t, "alice", "phone") }, 40001},
		{"invalidated token", func() (string, string) {
			w.call(t, http.MethodPost, "/apps/"+w.app.ID+"/tokens/invalidate", nil)
			return tok, w.mint(t, "alice", "phone")
		}, 40001},
		{"token replaced by force refresh", func() (string, string) {
			old := w.stableToken(t, false)
			if old == tok {
				t.Fatal("invalidation did not make stable_token hand out a new token")
			}
			w.stableToken(t, true)
			return old, w.mint(t, "alice", "phone")
		}, 40001},
		{"expired token", func() (string, string) {
			cur := w.stableToken(t, false)
			w.clock.Advance(WeChatTokenTTL)
			return cur, w.mint(t, "alice", "phone")
		}, 42001},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			token, code := st.setup()
			if got := errcode(w.phone(t, token, code)); got != st.want {
				t.Fatalf("errcode = %d, want %d", got, st.want)
			}
		})
	}
	stats := w.s.WeChatTokenStats(w.app.ID)
	if stats.ForceRefreshes != 1 || stats.Invalidations != 1 || stats.Issued != 3 || stats.Rejected != 3 {
		t.Fatalf("stats = %+v", stats)
	}
	if got := w.call(t, http.MethodGet, "/apps/"+w.app.ID+"/tokens", nil); got["force_refreshes"] != float64(1) {
		t.Fatalf("GET tokens = %v", got)
	}
}

func TestWeChatStableTokenRenewal(t *testing.T) {
	t.Parallel()
	w := newWeChatSim(t, AppSpec{})
	tok := w.stableToken(t, false)
	w.clock.Advance(WeChatTokenTTL - wechatTokenRenewal + time.Second)
	renewed := w.stableToken(t, false)
	if renewed == tok {
		t.Fatal("stable token not renewed in its last five minutes")
	}
	// The old one still works until it expires.
	if got := errcode(w.phone(t, tok, w.mint(t, "a", "phone"))); got != 0 {
		t.Fatalf("old token in its last minutes: errcode %d", got)
	}
}

func TestWeChatClassicTokenOverlap(t *testing.T) {
	t.Parallel()
	w := newWeChatSim(t, AppSpec{})
	fetch := func() string {
		q := url.Values{"grant_type": {"client_credential"}, "appid": {w.app.AppID}, "secret": {w.app.AppSecret}}
		out := w.call(t, http.MethodGet, "/wechat/cgi-bin/token?"+q.Encode(), nil)
		return out["access_token"].(string)
	}
	first := fetch()
	second := fetch()
	if first == second {
		t.Fatal("a classic fetch returned the same token")
	}
	if got := errcode(w.phone(t, first, w.mint(t, "a", "phone"))); got != 0 {
		t.Fatalf("previous token inside the overlap: errcode %d", got)
	}
	w.clock.Advance(wechatTokenRenewal)
	if got := errcode(w.phone(t, first, w.mint(t, "a", "phone"))); got != 40001 {
		t.Fatalf("previous token after the overlap: errcode %d, want 40001", got)
	}
	if got := errcode(w.phone(t, second, w.mint(t, "a", "phone"))); got != 0 {
		t.Fatalf("current token: errcode %d", got)
	}
}

func TestWeChatInjectedFailure(t *testing.T) {
	t.Parallel()
	w := newWeChatSim(t, AppSpec{})
	w.s.FailWeChat(w.app.ID, WeChatError{API: wechatAPIJSCode2Sess, ErrCode: -1, ErrMsg: "system error", Times: 2})
	code := w.mint(t, "alice", "login")
	for range 2 {
		if got := errcode(w.login(t, w.app.AppID, w.app.AppSecret, code)); got != -1 {
			t.Fatalf("errcode = %d, want -1", got)
		}
	}
	if out := w.login(t, w.app.AppID, w.app.AppSecret, code); out["openid"] == nil {
		t.Fatalf("after the injected failures: %v (the code must not have been used up)", out)
	}
}

func TestWeChatEncryptedUserData(t *testing.T) {
	t.Parallel()
	w := newWeChatSim(t, AppSpec{UnionScope: "s"})
	out := w.login(t, w.app.AppID, w.app.AppSecret, w.mint(t, "alice", "login"))
	got := w.call(t, http.MethodPost, "/apps/"+w.app.ID+"/users/alice/encrypted-data", nil)
	// Cross-check with silenceper's decryptor.
	plain, err := encryptor.GetCipherText(out["session_key"].(string), got["encrypted_data"].(string), got["iv"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		OpenID    string `json:"openId"`
		UnionID   string `json:"unionId"`
		Watermark struct {
			AppID string `json:"appid"`
		} `json:"watermark"`
	}
	if err := json.Unmarshal(plain, &data); err != nil {
		t.Fatal(err)
	}
	alice := w.s.User(w.app, "alice")
	if data.OpenID != alice.OpenID || data.UnionID != alice.UnionID || data.Watermark.AppID != w.app.AppID {
		t.Fatalf("decrypted = %s", plain)
	}
	if _, _, err := w.s.WeChatEncryptedUserData(w.app.ID, "never-logged-in"); err == nil {
		t.Fatal("encrypted data for a user without a session")
	}
}

// capturedPush is one push as minigate would receive it.
type capturedPush struct {
	query url.Values
	ctype string
	body  []byte
}

// pushReceiver is a stand-in callback endpoint that records pushes and
// answers "success".
func pushReceiver(t *testing.T) (string, func() []capturedPush) {
	t.Helper()
	var mu sync.Mutex
	var got []capturedPush
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/callbacks/app/messages" || r.Method != http.MethodPost {
			http.Error(w, "wrong path "+r.URL.Path, http.StatusNotFound)
			return
		}
		mu.Lock()
		got = append(got, capturedPush{query: r.URL.Query(), ctype: r.Header.Get("Content-Type"), body: body})
		mu.Unlock()
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/callbacks/app", func() []capturedPush {
		mu.Lock()
		defer mu.Unlock()
		return append([]capturedPush(nil), got...)
	}
}

// testSign is the signature rule, written again for the test.
func testSign(parts ...string) string {
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(sum[:])
}

// flatFields parses a flat push document (XML or JSON) into strings.
func flatFields(t *testing.T, body []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	if bytes.HasPrefix(body, []byte("{")) {
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatalf("JSON %q: %v", body, err)
		}
		for k, v := range m {
			out[k] = fmt.Sprint(v)
		}
		return out
	}
	var doc struct {
		Fields []struct {
			XMLName xml.Name
			Value   string `xml:",chardata"`
		} `xml:",any"`
	}
	if err := xml.Unmarshal(body, &doc); err != nil {
		t.Fatalf("XML %q: %v", body, err)
	}
	for _, f := range doc.Fields {
		out[f.XMLName.Local] = f.Value
	}
	return out
}

func TestWeChatPushModesAndFormats(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{PushModePlaintext, PushModeCompatible, PushModeSafe} {
		for _, format := range []string{PushFormatXML, PushFormatJSON} {
			for _, platform := range []string{WeChat, QQ} {
				t.Run(platform+"/"+mode+"/"+format, func(t *testing.T) {
					t.Parallel()
					w := newWeChatSim(t, AppSpec{Platform: platform, MessageMode: mode, MessageFormat: format})
					cb, pushes := pushReceiver(t)
					w.app.CallbackURL = cb
					rep, err := w.s.Push(context.Background(), w.app, "alice", PushRequest{Type: "text", Content: "hi ]]> there"})
					if err != nil {
						t.Fatal(err)
					}
					if len(rep.Deliveries) != 1 || rep.Deliveries[0].Status != 200 || rep.Deliveries[0].Body != "success" {
						t.Fatalf("report = %+v", rep)
					}
					got := pushes()[0]
					checkPush(t, w, got, mode, format)
				})
			}
		}
	}
}

// checkPush verifies a captured push independently (silenceper decrypts)
// and checks its fields.
func checkPush(t *testing.T, w *wechatSim, p capturedPush, mode, format string) {
	t.Helper()
	q := p.query
	token := w.app.Messages.Token
	if q.Get("signature") != testSign(token, q.Get("timestamp"), q.Get("nonce")) {
		t.Fatalf("bad signature in %v", q)
	}
	if q.Get("openid") != w.s.User(w.app, "alice").OpenID {
		t.Fatalf("openid in query = %q", q.Get("openid"))
	}
	wantCType := map[string]string{PushFormatXML: "text/xml", PushFormatJSON: "application/json"}[format]
	if p.ctype != wantCType || (format == PushFormatJSON) != bytes.HasPrefix(p.body, []byte("{")) {
		t.Fatalf("content type %q for body %q", p.ctype, p.body)
	}
	outer := flatFields(t, p.body)
	plain := outer
	if mode == PushModePlaintext {
		if q.Has("encrypt_type") || q.Has("msg_signature") || outer["Encrypt"] != "" {
			t.Fatalf("plaintext push with encryption: %v %v", q, outer)
		}
	} else {
		enc := outer["Encrypt"]
		if q.Get("encrypt_type") != "aes" || q.Get("msg_signature") != testSign(token, q.Get("timestamp"), q.Get("nonce"), enc) {
			t.Fatalf("bad msg_signature in %v", q)
		}
		_, raw, err := util.DecryptMsg(w.app.AppID, enc, w.app.Messages.EncodingAESKey)
		if err != nil {
			t.Fatalf("silenceper cannot decrypt: %v", err)
		}
		plain = flatFields(t, raw)
		if (format == PushFormatJSON) != bytes.HasPrefix(raw, []byte("{")) {
			t.Fatalf("decrypted format: %q", raw)
		}
		switch mode {
		case PushModeSafe:
			if len(outer) != 2 || outer["ToUserName"] != w.app.OriginalID {
				t.Fatalf("safe mode body has %v", outer)
			}
		case PushModeCompatible:
			if outer["Content"] != plain["Content"] || outer["MsgId"] != plain["MsgId"] {
				t.Fatalf("compatible mode plaintext copy %v differs from %v", outer, plain)
			}
		}
	}
	if plain["Content"] != "hi ]]> there" || plain["MsgType"] != "text" || plain["FromUserName"] != w.s.User(w.app, "alice").OpenID ||
		plain["ToUserName"] != w.app.OriginalID || plain["MsgId"] == "" || plain["CreateTime"] != fmt.Sprint(w.clock.Now().Unix()) {
		t.Fatalf("message fields = %v", plain)
	}
}

func TestWeChatPushFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mode   string
		faults Faults
		check  func(t *testing.T, w *wechatSim, pushes []capturedPush)
	}{
		{"bad signature", PushModeSafe, Faults{BadSignature: true}, func(t *testing.T, w *wechatSim, p []capturedPush) {
			q := p[0].query
			if q.Get("signature") == testSign(w.app.Messages.Token, q.Get("timestamp"), q.Get("nonce")) {
				t.Fatal("signature is valid")
			}
			if q.Get("msg_signature") != testSign(w.app.Messages.Token, q.Get("timestamp"), q.Get("nonce"), flatFields(t, p[0].body)["Encrypt"]) {
				t.Fatal("msg_signature was corrupted too")
			}
		}},
		{"bad msg_signature", PushModeCompatible, Faults{BadMsgSignature: true}, func(t *testing.T, w *wechatSim, p []capturedPush) {
			q := p[0].query
			if q.Get("signature") != testSign(w.app.Messages.Token, q.Get("timestamp"), q.Get("nonce")) {
				t.Fatal("signature was corrupted too")
			}
			if q.Get("msg_signature") == testSign(w.app.Messages.Token, q.Get("timestamp"), q.Get("nonce"), flatFields(t, p[0].body)["Encrypt"]) {
				t.Fatal("msg_signature is valid")
			}
		}},
		{"stale timestamp", PushModePlaintext, Faults{StaleTimestamp: true}, func(t *testing.T, w *wechatSim, p []capturedPush) {
			q := p[0].query
			if q.Get("timestamp") != fmt.Sprint(w.clock.Now().Add(-wechatStaleBy).Unix()) ||
				q.Get("signature") != testSign(w.app.Messages.Token, q.Get("timestamp"), q.Get("nonce")) {
				t.Fatalf("query = %v", q)
			}
		}},
		{"foreign app id", PushModeSafe, Faults{ForeignAppID: true}, func(t *testing.T, w *wechatSim, p []capturedPush) {
			enc := flatFields(t, p[0].body)["Encrypt"]
			if _, _, err := util.DecryptMsg(w.app.AppID, enc, w.app.Messages.EncodingAESKey); err == nil {
				t.Fatal("silenceper accepts it as ours")
			}
			if _, _, err := util.DecryptMsg(wechatForeignAppID, enc, w.app.Messages.EncodingAESKey); err != nil {
				t.Fatalf("not the foreign app id inside: %v", err)
			}
		}},
		{"tampered ciphertext", PushModeSafe, Faults{TamperCiphertext: true}, func(t *testing.T, w *wechatSim, p []capturedPush) {
			enc := flatFields(t, p[0].body)["Encrypt"]
			q := p[0].query
			if q.Get("msg_signature") != testSign(w.app.Messages.Token, q.Get("timestamp"), q.Get("nonce"), enc) {
				t.Fatal("tampered push is not signed")
			}
			if _, _, err := util.DecryptMsg(w.app.AppID, enc, w.app.Messages.EncodingAESKey); err == nil {
				t.Fatal("silenceper decrypts the tampered ciphertext")
			}
		}},
		{"truncated", PushModePlaintext, Faults{Truncate: true}, func(t *testing.T, w *wechatSim, p []capturedPush) {
			if xml.Unmarshal(p[0].body, new(struct{})) == nil || bytes.HasSuffix(p[0].body, []byte("</xml>")) {
				t.Fatalf("body is whole: %q", p[0].body)
			}
		}},
		{"duplicates", PushModeSafe, Faults{Duplicates: 4}, func(t *testing.T, w *wechatSim, p []capturedPush) {
			if len(p) != 5 {
				t.Fatalf("%d deliveries, want 5", len(p))
			}
			for _, d := range p[1:] {
				if !bytes.Equal(d.body, p[0].body) || d.query.Encode() != p[0].query.Encode() {
					t.Fatal("duplicates differ")
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWeChatSim(t, AppSpec{MessageMode: tt.mode})
			cb, pushes := pushReceiver(t)
			w.app.CallbackURL = cb
			if _, err := w.s.Push(context.Background(), w.app, "alice", PushRequest{Type: "text", Content: "x", Faults: tt.faults}); err != nil {
				t.Fatal(err)
			}
			tt.check(t, w, pushes())
		})
	}
}

func TestWeChatPushRefusesFaultsItCannotCarry(t *testing.T) {
	t.Parallel()
	amount := int64(1)
	for _, tt := range []struct {
		name   string
		mode   string
		faults Faults
	}{
		{"msg_signature in plaintext", PushModePlaintext, Faults{BadMsgSignature: true}},
		{"foreign app id in plaintext", PushModePlaintext, Faults{ForeignAppID: true}},
		{"ciphertext in plaintext", PushModePlaintext, Faults{TamperCiphertext: true}},
		{"amount", PushModeSafe, Faults{Amount: &amount}},
		{"foreign merchant", PushModeSafe, Faults{ForeignMerchant: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newWeChatSim(t, AppSpec{MessageMode: tt.mode})
			cb, pushes := pushReceiver(t)
			w.app.CallbackURL = cb
			if _, err := w.s.Push(context.Background(), w.app, "alice", PushRequest{Type: "text", Content: "x", Faults: tt.faults}); err == nil {
				t.Fatal("accepted")
			}
			if n := len(pushes()); n != 0 {
				t.Fatalf("%d pushes sent", n)
			}
		})
	}
	w := newWeChatSim(t, AppSpec{MessageMode: PushModePlaintext})
	if _, err := w.s.Push(context.Background(), w.app, "alice", PushRequest{Type: "text", Content: "x", Mode: PushModeSafe}); err == nil {
		t.Fatal("safe mode without an EncodingAESKey accepted")
	}
}

func TestWeChatPushTypesAndActivity(t *testing.T) {
	t.Parallel()
	w := newWeChatSim(t, AppSpec{MessageMode: PushModePlaintext, MessageFormat: PushFormatJSON})
	cb, pushes := pushReceiver(t)
	w.app.CallbackURL = cb
	openid := w.s.User(w.app, "alice").OpenID
	start := w.clock.Now()

	push := func(req PushRequest) (*Report, map[string]string) {
		t.Helper()
		rep, err := w.s.Push(context.Background(), w.app, "alice", req)
		if err != nil {
			t.Fatal(err)
		}
		all := pushes()
		return rep, flatFields(t, all[len(all)-1].body)
	}

	_, ev := push(PushRequest{Type: "event", SessionFrom: "order-42"})
	if ev["Event"] != "user_enter_tempsession" || ev["SessionFrom"] != "order-42" || ev["MsgId"] != "" {
		t.Fatalf("event = %v", ev)
	}
	if act := w.s.WeChatActivity(w.app.ID, openid); !act.EnteredSessionAt.Equal(start) || !act.LastMessageAt.IsZero() {
		t.Fatalf("activity after entering = %+v", act)
	}

	w.clock.Advance(time.Minute)
	rep, img := push(PushRequest{Type: "image"})
	if img["MediaId"] == "" || !strings.HasSuffix(img["PicUrl"], img["MediaId"]) || rep.Details["media_id"] != img["MediaId"] {
		t.Fatalf("image = %v, details %v", img, rep.Details)
	}
	if act := w.s.WeChatActivity(w.app.ID, openid); !act.LastMessageAt.Equal(start.Add(time.Minute)) {
		t.Fatalf("activity after a message = %+v", act)
	}
	tok := w.stableToken(t, false)
	req := httptest.NewRequest(http.MethodGet, "/wechat/cgi-bin/media/get?access_token="+tok+"&media_id="+img["MediaId"], nil)
	resp, err := w.h.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	pic, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "image/png" || !bytes.Equal(pic, samplePNG()) {
		t.Fatalf("media/get: %s %q", resp.Header.Get("Content-Type"), pic)
	}
	if got := errcode(w.call(t, http.MethodGet, "/wechat/cgi-bin/media/get?access_token="+tok+"&media_id=unknown", nil)); got != 40007 {
		t.Fatalf("unknown media: errcode %d", got)
	}

	_, page := push(PushRequest{Type: "miniprogrampage", Title: "Shoes", PagePath: "pages/p?id=1"})
	if page["Title"] != "Shoes" || page["PagePath"] != "pages/p?id=1" || page["AppId"] != w.app.AppID || page["ThumbMediaId"] == "" {
		t.Fatalf("miniprogrampage = %v", page)
	}
	_, other := push(PushRequest{Type: "event", Event: "wxa_media_check"})
	if other["Event"] != "wxa_media_check" || other["SessionFrom"] != "" {
		t.Fatalf("other event = %v", other)
	}
	rep, fixed := push(PushRequest{Type: "text", Content: "again", MsgID: 42, CreateTime: 1700000000})
	if fixed["MsgId"] != "42" || fixed["CreateTime"] != "1700000000" || rep.Details["msg_id"] != int64(42) {
		t.Fatalf("fixed ids = %v, details %v", fixed, rep.Details)
	}
	var sent map[string]any
	if err := json.Unmarshal(rep.Sent, &sent); err != nil || sent["Content"] != "again" {
		t.Fatalf("report.sent = %s (%v)", rep.Sent, err)
	}
	for _, bad := range []PushRequest{{Type: "text"}, {Type: "Bad Type"}, {Type: "event", Event: "<x>"}, {Type: "text", Content: "x", Mode: "loud"}} {
		if _, err := w.s.Push(context.Background(), w.app, "alice", bad); err == nil {
			t.Fatalf("push %+v accepted", bad)
		}
	}
}

func TestWeChatControlRoutesOverHTTP(t *testing.T) {
	t.Parallel()
	// Through a real listener, so fiber's buffers are reused across
	// requests: names minted through the control route must survive.
	w := newWeChatSim(t, AppSpec{})
	base := serveTest(t, w.s)
	post := func(path string) map[string]any {
		resp, err := http.Post(base+path, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out := map[string]any{}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	var codes []string
	for i := range 20 {
		codes = append(codes, post(fmt.Sprintf("/apps/%s/users/user-%02d/code", w.app.ID, i))["code"].(string))
	}
	for i, code := range codes {
		q := url.Values{"appid": {w.app.AppID}, "secret": {w.app.AppSecret}, "js_code": {code}, "grant_type": {"authorization_code"}}
		resp, err := http.Get(base + "/wechat/sns/jscode2session?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if want := w.s.User(w.app, fmt.Sprintf("user-%02d", i)).OpenID; out["openid"] != want {
			t.Fatalf("user-%02d logged in as %v, want %s", i, out["openid"], want)
		}
	}
}
