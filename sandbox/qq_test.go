package sandbox

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

type qqSim struct {
	s     *Sandbox
	h     *fiber.App
	clock *testClock
	app   *App
}

// newQQSim returns a simulator with one QQ app (with a QQ wallet merchant
// and union scope "brand") on a settable clock.
func newQQSim(t *testing.T, publicURL string) *qqSim {
	t.Helper()
	clock := &testClock{now: time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)}
	s := New(Options{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	a, _, err := NewAppPair(AppSpec{ID: "qq-test", Platform: QQ, UnionScope: "brand", Pay: true, PublicURL: publicURL})
	if err != nil {
		t.Fatal(err)
	}
	s.AddApp(a)
	return &qqSim{s: s, h: s.Handler(), clock: clock, app: a}
}

// get calls a QQ API and decodes its JSON answer.
func (q *qqSim) get(t *testing.T, path string, query url.Values) map[string]any {
	t.Helper()
	resp, err := q.h.Test(httptest.NewRequest(http.MethodGet, "/qq"+path+"?"+query.Encode(), nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, resp.StatusCode)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (q *qqSim) login(t *testing.T, secret, code string) map[string]any {
	t.Helper()
	return q.get(t, "/sns/jscode2session", url.Values{"appid": {q.app.AppID}, "secret": {secret},
		"js_code": {code}, "grant_type": {"authorization_code"}})
}

func (q *qqSim) token(t *testing.T) string {
	t.Helper()
	out := q.get(t, "/api/getToken", url.Values{"grant_type": {"client_credential"}, "appid": {q.app.AppID}, "secret": {q.app.AppSecret}})
	tok, _ := out["access_token"].(string)
	if tok == "" || out["expires_in"] != float64(7200) {
		t.Fatalf("getToken = %v", out)
	}
	return tok
}

func errcodeOf(m map[string]any) int {
	f, _ := m["errcode"].(float64)
	return int(f)
}

func TestQQCode2Session(t *testing.T) {
	t.Parallel()
	q := newQQSim(t, "")
	code, err := q.s.MintCode(q.app.ID, "alice", "login")
	if err != nil {
		t.Fatal(err)
	}
	out := q.login(t, q.app.AppSecret, code)
	alice := q.s.User(q.app, "alice")
	if errcodeOf(out) != 0 || out["openid"] != alice.OpenID || out["unionid"] != alice.UnionID || alice.UnionID == "" {
		t.Fatalf("login = %v, want %+v", out, alice)
	}
	key := out["session_key"].(string)
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		t.Fatalf("session_key %q", key)
	}
	if q.s.SessionKey(q.app.ID, "alice") != key {
		t.Fatal("the QQ login's session_key was not remembered")
	}

	t.Run("open data encrypted with the session key", func(t *testing.T) {
		enc, iv, err := q.s.WeChatEncryptedUserData(q.app.ID, "alice")
		if err != nil {
			t.Fatal(err)
		}
		k, _ := base64.StdEncoding.DecodeString(key)
		ct, _ := base64.StdEncoding.DecodeString(enc)
		ivb, _ := base64.StdEncoding.DecodeString(iv)
		block, err := aes.NewCipher(k)
		if err != nil {
			t.Fatal(err)
		}
		cipher.NewCBCDecrypter(block, ivb).CryptBlocks(ct, ct)
		ct = ct[:len(ct)-int(ct[len(ct)-1])]
		var data struct {
			OpenID    string `json:"openId"`
			Watermark struct {
				AppID string `json:"appid"`
			} `json:"watermark"`
		}
		if err := json.Unmarshal(ct, &data); err != nil {
			t.Fatal(err)
		}
		if data.OpenID != alice.OpenID || data.Watermark.AppID != q.app.AppID {
			t.Fatalf("open data %+v", data)
		}
	})

	fresh := func() string {
		c, err := q.s.MintCode(q.app.ID, "alice", "login")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name  string
		query url.Values
		want  int
	}{
		{"code used", url.Values{"appid": {q.app.AppID}, "secret": {q.app.AppSecret}, "js_code": {code}, "grant_type": {"authorization_code"}}, 40163},
		{"unknown code", url.Values{"appid": {q.app.AppID}, "secret": {q.app.AppSecret}, "js_code": {"nope"}, "grant_type": {"authorization_code"}}, 40029},
		{"wrong secret", url.Values{"appid": {q.app.AppID}, "secret": {"x"}, "js_code": {fresh()}, "grant_type": {"authorization_code"}}, 40001},
		{"unknown appid", url.Values{"appid": {"1100000000"}, "secret": {q.app.AppSecret}, "js_code": {fresh()}, "grant_type": {"authorization_code"}}, 40013},
		{"grant type", url.Values{"appid": {q.app.AppID}, "secret": {q.app.AppSecret}, "js_code": {fresh()}, "grant_type": {"client_credential"}}, 40002},
	}
	for _, tt := range tests {
		if got := errcodeOf(q.get(t, "/sns/jscode2session", tt.query)); got != tt.want {
			t.Errorf("%s: errcode %d, want %d", tt.name, got, tt.want)
		}
	}

	t.Run("code expires", func(t *testing.T) {
		c := fresh()
		q.clock.Advance(CodeTTL + time.Second)
		if got := errcodeOf(q.login(t, q.app.AppSecret, c)); got != 40029 {
			t.Fatalf("errcode %d, want 40029", got)
		}
	})
	t.Run("injected failures", func(t *testing.T) {
		q.s.FailQQ(q.app.ID, QQError{API: "jscode2session", ErrCode: 45011, ErrMsg: "freq limit", Times: 2})
		for range 2 {
			if out := q.login(t, q.app.AppSecret, fresh()); errcodeOf(out) != 45011 || out["errmsg"] != "freq limit" {
				t.Fatalf("answer %v, want the injected 45011", out)
			}
		}
		if out := q.login(t, q.app.AppSecret, fresh()); errcodeOf(out) != 0 {
			t.Fatalf("answer %v after the injected failures", out)
		}
	})
}

// TestQQTokens checks getToken's rotation: a new token supersedes the old,
// which keeps working for five minutes; tokens expire after 7200 s.
func TestQQTokens(t *testing.T) {
	t.Parallel()
	q := newQQSim(t, "")
	valid := func(tok string) int {
		a, code := q.s.qqTokenApp(tok)
		if code == 0 && a.ID != q.app.ID {
			t.Fatalf("token resolved to app %s", a.ID)
		}
		return code
	}
	t1 := q.token(t)
	if valid(t1) != 0 {
		t.Fatal("fresh token invalid")
	}
	q.clock.Advance(time.Minute)
	t2 := q.token(t)
	if t2 == t1 || valid(t1) != 0 || valid(t2) != 0 {
		t.Fatal("both tokens should work right after the second fetch")
	}
	q.clock.Advance(qqTokenOverlap - time.Second)
	if valid(t1) != 0 {
		t.Fatal("the old token stopped working inside the overlap")
	}
	q.clock.Advance(2 * time.Second)
	if valid(t1) != qqErrTokenExpired || valid(t2) != 0 {
		t.Fatalf("after the overlap: old %d, new %d", valid(t1), valid(t2))
	}
	q.clock.Advance(qqTokenTTL)
	if valid(t2) != qqErrTokenExpired {
		t.Fatal("the token outlived expires_in")
	}
	q.token(t) // forgets expired tokens
	if valid(t1) != qqErrInvalidToken || valid("unknown") != qqErrInvalidToken {
		t.Fatal("forgotten and unknown tokens should be 40014")
	}

	for name, query := range map[string]url.Values{
		"wrong secret": {"grant_type": {"client_credential"}, "appid": {q.app.AppID}, "secret": {"x"}},
		"grant type":   {"grant_type": {"authorization_code"}, "appid": {q.app.AppID}, "secret": {q.app.AppSecret}},
	} {
		if got := errcodeOf(q.get(t, "/api/getToken", query)); got != map[string]int{"wrong secret": 40001, "grant type": 40002}[name] {
			t.Errorf("%s: errcode %d", name, got)
		}
	}
}
