package sessions_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/ids"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// platformCase is what the contract suite expects of one platform.
type platformCase struct {
	name     string
	platform string
	// unionid: the platform returns unionids (for apps with a scope).
	unionid bool
	// sessionKey: the platform issues a session_key at login.
	sessionKey bool
}

var platformCases = []platformCase{
	{"wechat", sandbox.WeChat, true, true},
	{"qq", sandbox.QQ, true, true},
	{"alipay", sandbox.Alipay, false, false},
}

// loginResponse is the body of a successful login.
type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	User      struct {
		ID      string  `json:"id"`
		OpenID  string  `json:"openid"`
		UnionID *string `json:"unionid"`
	} `json:"user"`
}

type meResponse struct {
	ID    string `json:"id"`
	Phone *struct {
		PhoneNumber     string `json:"phone_number"`
		PurePhoneNumber string `json:"pure_phone_number"`
		CountryCode     string `json:"country_code"`
	} `json:"phone"`
	Identities []struct {
		App      string  `json:"app"`
		Platform string  `json:"platform"`
		OpenID   string  `json:"openid"`
		UnionID  *string `json:"unionid"`
	} `json:"identities"`
	Session struct {
		App       string    `json:"app"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"session"`
}

func loginBody(code string, prefer bool) map[string]any {
	return map[string]any{"code": code, "prefer_unionid": prefer}
}

// login logs user name in to app (short name) and requires a 201.
func login(t *testing.T, e *testenv.Env, app, name string, prefer bool) loginResponse {
	t.Helper()
	r := e.Do("POST", "/v1/apps/"+e.App(app).ID+"/sessions", loginBody(e.MintCode(app, name), prefer))
	if r.Status != 201 {
		t.Fatalf("login %s/%s = %d %s", app, name, r.Status, r.Body)
	}
	var out loginResponse
	r.Decode(t, &out)
	return out
}

func me(t *testing.T, e *testenv.Env, token string) (meResponse, *testenv.Response) {
	t.Helper()
	r := e.Do("GET", "/v1/me", nil, testenv.Bearer(token))
	var out meResponse
	if r.Status == 200 {
		r.Decode(t, &out)
	}
	return out, r
}

// wantIdentity is the openid and unionid the simulator gives user name in app.
func wantIdentity(e *testenv.Env, app, name string) (openID, unionID string) {
	sb := e.SandboxApp(app)
	u := e.Sandbox.User(sb, name)
	if sb.Platform == sandbox.Alipay {
		return u.AlipayOpenID, ""
	}
	return u.OpenID, u.UnionID
}

func count(t *testing.T, e *testenv.Env, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.DB.Get(&n, query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestContract is the sessions contract suite, run for every platform end
// to end through the simulator.
func TestContract(t *testing.T) {
	t.Parallel()
	for _, pc := range platformCases {
		t.Run(pc.name, func(t *testing.T) {
			t.Parallel()
			clk := &testenv.Clock{}
			e := testenv.Start(t, testenv.Spec{
				Apps: []sandbox.AppSpec{
					{ID: "a", Platform: pc.platform, UnionScope: "brand"},
					{ID: "b", Platform: pc.platform, UnionScope: "brand"},
					{ID: "c", Platform: pc.platform, UnionScope: "other"},
					{ID: "d", Platform: pc.platform, UnionScope: "brand"},
				},
				Now: clk.Now,
			})
			runContract(t, e, pc, clk)
		})
	}
}

func runContract(t *testing.T, e *testenv.Env, pc platformCase, clk *testenv.Clock) {
	t.Run("login creates a user", func(t *testing.T) {
		before := clk.Now()
		res := login(t, e, "a", "alice", false)
		openID, unionID := wantIdentity(e, "a", "alice")
		if !ids.Valid("usr", res.User.ID) || res.User.OpenID != openID {
			t.Fatalf("user = %+v, want a usr_ id and openid %s", res.User, openID)
		}
		if pc.unionid != (res.User.UnionID != nil) || (res.User.UnionID != nil && *res.User.UnionID != unionID) {
			t.Fatalf("unionid = %v, want %q", res.User.UnionID, unionID)
		}
		if raw, _ := base64.RawURLEncoding.DecodeString(res.Token); len(raw) != 32 {
			t.Fatalf("token %q is not 256 bits of base64url", res.Token)
		}
		if d := res.ExpiresAt.Sub(before.Add(config.DefaultSessionTTL)); d < 0 || d > time.Minute {
			t.Fatalf("expires_at = %v, want now + %v", res.ExpiresAt, config.DefaultSessionTTL)
		}
		if n := count(t, e, `SELECT count(*) FROM users WHERE id = $1`, res.User.ID); n != 1 {
			t.Fatalf("users with id: %d", n)
		}
		if n := count(t, e, `SELECT count(*) FROM identities WHERE app = $1 AND openid = $2 AND user_id = $3`,
			e.App("a").ID, openID, res.User.ID); n != 1 {
			t.Fatalf("identities: %d", n)
		}
		// The token is stored only as its SHA-256 hash.
		sum := sha256.Sum256([]byte(res.Token))
		if n := count(t, e, `SELECT count(*) FROM sessions WHERE token_hash = $1 AND user_id = $2`, sum[:], res.User.ID); n != 1 {
			t.Fatalf("sessions with the token's hash: %d", n)
		}
		if n := count(t, e, `SELECT count(*) FROM sessions WHERE position(convert_to($1, 'UTF8') IN token_hash) > 0 OR id = $1`, res.Token); n != 0 {
			t.Fatal("the token itself is stored")
		}
	})

	t.Run("same openid logs in to the same user", func(t *testing.T) {
		first := login(t, e, "a", "bert", false)
		second := login(t, e, "a", "bert", true)
		if second.User.ID != first.User.ID || second.Token == first.Token {
			t.Fatalf("second login: user %s token reused=%v, want user %s and a new token",
				second.User.ID, second.Token == first.Token, first.User.ID)
		}
		for _, res := range []loginResponse{first, second} {
			m, r := me(t, e, res.Token)
			if r.Status != 200 || m.ID != first.User.ID || len(m.Identities) != 1 || !m.Session.ExpiresAt.Equal(res.ExpiresAt) {
				t.Fatalf("GET /v1/me = %d %s (login said expires_at %v)", r.Status, r.Body, res.ExpiresAt)
			}
		}
	})

	t.Run("unionid merges within a scope and not across scopes", func(t *testing.T) {
		a := login(t, e, "a", "cleo", true)
		b := login(t, e, "b", "cleo", true)
		c := login(t, e, "c", "cleo", true)
		if merged := b.User.ID == a.User.ID; merged != pc.unionid {
			t.Fatalf("same scope: merged = %v, want %v", merged, pc.unionid)
		}
		if c.User.ID == a.User.ID || c.User.ID == b.User.ID {
			t.Fatal("a login in another union scope joined an existing user")
		}
		m, r := me(t, e, b.Token)
		want := 1
		if pc.unionid {
			want = 2
		}
		if r.Status != 200 || len(m.Identities) != want || m.Session.App != e.App("b").ID {
			t.Fatalf("GET /v1/me = %d %s, want %d identities", r.Status, r.Body, want)
		}
	})

	t.Run("without prefer_unionid a new identity gets its own user but keeps the unionid", func(t *testing.T) {
		a := login(t, e, "a", "dora", false)
		b := login(t, e, "b", "dora", false)
		if a.User.ID == b.User.ID {
			t.Fatal("identities were linked without prefer_unionid")
		}
		_, unionID := wantIdentity(e, "b", "dora")
		if pc.unionid && (b.User.UnionID == nil || *b.User.UnionID != unionID) {
			t.Fatalf("unionid = %v, want %s stored", b.User.UnionID, unionID)
		}
		// An existing identity never moves to another user.
		again := login(t, e, "b", "dora", true)
		if again.User.ID != b.User.ID {
			t.Fatalf("identity moved from %s to %s", b.User.ID, again.User.ID)
		}
		// A new identity in the scope joins the oldest user with the unionid.
		d := login(t, e, "d", "dora", true)
		if joined := d.User.ID == a.User.ID; joined != pc.unionid {
			t.Fatalf("third app joined the oldest user: %v, want %v", joined, pc.unionid)
		}
	})

	t.Run("a reused code fails with 400 invalid_code and changes nothing", func(t *testing.T) {
		code := e.MintCode("a", "emil")
		path := "/v1/apps/" + e.App("a").ID + "/sessions"
		if r := e.Do("POST", path, loginBody(code, false)); r.Status != 201 {
			t.Fatalf("first use = %d %s", r.Status, r.Body)
		}
		sessions := count(t, e, `SELECT count(*) FROM sessions`)
		users := count(t, e, `SELECT count(*) FROM users`)
		for _, c := range []string{code, "never-issued-code"} {
			r := e.Do("POST", path, loginBody(c, false))
			if r.Status != 400 || r.ErrorCode() != "invalid_code" {
				t.Fatalf("code %q = %d %s, want 400 invalid_code", c, r.Status, r.Body)
			}
		}
		if count(t, e, `SELECT count(*) FROM sessions`) != sessions || count(t, e, `SELECT count(*) FROM users`) != users {
			t.Fatal("a failed login wrote sessions or users")
		}
	})

	t.Run("bad input is 400 or 404 and consumes nothing", func(t *testing.T) {
		code := e.MintCode("a", "finn")
		for _, tc := range []struct {
			name   string
			app    string
			body   any
			status int
			code   string
		}{
			{"no body", e.App("a").ID, nil, 400, "invalid_json"},
			{"not JSON", e.App("a").ID, "code=x", 400, "invalid_json"},
			{"unknown field", e.App("a").ID, map[string]any{"code": code, "extra": 1}, 400, "invalid_json"},
			{"empty code", e.App("a").ID, loginBody("", false), 400, "invalid_code"},
			{"oversized code", e.App("a").ID, loginBody(strings.Repeat("x", 300), false), 400, "invalid_code"},
			{"unknown app", "no-such-app", loginBody(code, false), 404, "app_not_found"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.Do("POST", "/v1/apps/"+tc.app+"/sessions", tc.body)
				if r.Status != tc.status || r.ErrorCode() != tc.code {
					t.Fatalf("= %d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
				}
			})
		}
		// The code was never sent to the platform, so it still works.
		if r := e.Do("POST", "/v1/apps/"+e.App("a").ID+"/sessions", loginBody(code, false)); r.Status != 201 {
			t.Fatalf("login after bad requests = %d %s", r.Status, r.Body)
		}
	})

	t.Run("responses never contain the session key", func(t *testing.T) {
		r := e.Do("POST", "/v1/apps/"+e.App("a").ID+"/sessions", loginBody(e.MintCode("a", "gus"), false))
		if r.Status != 201 {
			t.Fatalf("login = %d %s", r.Status, r.Body)
		}
		var res loginResponse
		r.Decode(t, &res)
		m, mr := me(t, e, res.Token)
		if mr.Status != 200 || m.ID != res.User.ID || len(m.Identities) != 1 ||
			m.Identities[0].Platform != pc.platform || m.Identities[0].OpenID != res.User.OpenID {
			t.Fatalf("GET /v1/me = %d %s", mr.Status, mr.Body)
		}
		key := e.Sandbox.SessionKey(e.App("a").ID, "gus")
		if pc.sessionKey != (key != "") {
			t.Fatalf("simulator session key = %q, want one: %v", key, pc.sessionKey)
		}
		var sealed []byte
		if err := e.DB.Get(&sealed, `SELECT session_key_sealed FROM identities WHERE app = $1 AND openid = $2`,
			e.App("a").ID, res.User.OpenID); err != nil && pc.sessionKey {
			t.Fatal(err)
		}
		if pc.sessionKey != (sealed != nil) {
			t.Fatalf("stored session key present = %v, want %v", sealed != nil, pc.sessionKey)
		}
		for _, body := range [][]byte{r.Body, mr.Body} {
			if bytes.Contains(body, []byte("session_key")) || (key != "" && bytes.Contains(body, []byte(key))) {
				t.Fatalf("response reveals the session key: %s", body)
			}
		}
		if key != "" {
			raw, _ := base64.StdEncoding.DecodeString(key)
			if bytes.Contains(sealed, []byte(key)) || bytes.Contains(sealed, raw) {
				t.Fatal("the session key is stored in the clear")
			}
		}
		if key != "" && strings.Contains(e.Logs.String(), key) {
			t.Fatal("the session key was logged")
		}
		if strings.Contains(e.Logs.String(), res.Token) {
			t.Fatal("the session token was logged")
		}
	})

	t.Run("logout revokes only the current session", func(t *testing.T) {
		one := login(t, e, "a", "hana", false)
		two := login(t, e, "a", "hana", false)
		if r := e.Do("DELETE", "/v1/sessions/current", nil, testenv.Bearer(one.Token)); r.Status != 204 {
			t.Fatalf("logout = %d %s", r.Status, r.Body)
		}
		for _, tc := range []struct {
			method, path string
		}{{"GET", "/v1/me"}, {"DELETE", "/v1/sessions/current"}} {
			if r := e.Do(tc.method, tc.path, nil, testenv.Bearer(one.Token)); r.Status != 401 || r.ErrorCode() != "unauthenticated" {
				t.Fatalf("%s %s after logout = %d %s", tc.method, tc.path, r.Status, r.Body)
			}
		}
		if _, r := me(t, e, two.Token); r.Status != 200 {
			t.Fatalf("the other session = %d %s", r.Status, r.Body)
		}
	})

	t.Run("unknown tokens are 401 and API keys may not act as users", func(t *testing.T) {
		random := make([]byte, 32)
		_, _ = rand.Read(random)
		for _, tc := range []struct {
			name   string
			opts   []testenv.Opt
			status int
		}{
			{"no credentials", nil, 401},
			{"unknown token", []testenv.Opt{testenv.Bearer(base64.RawURLEncoding.EncodeToString(random))}, 401},
			{"malformed token", []testenv.Opt{testenv.Bearer("not-a-token")}, 401},
			{"operator key", []testenv.Opt{testenv.Operator()}, 403},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if r := e.Do("GET", "/v1/me", nil, tc.opts...); r.Status != tc.status {
					t.Fatalf("GET /v1/me = %d %s, want %d", r.Status, r.Body, tc.status)
				}
			})
		}
	})

	// Last: it moves the clock.
	t.Run("an expired token is 401", func(t *testing.T) {
		res := login(t, e, "a", "ivan", false)
		if _, r := me(t, e, res.Token); r.Status != 200 {
			t.Fatalf("fresh token = %d %s", r.Status, r.Body)
		}
		clk.Advance(config.DefaultSessionTTL + time.Second)
		if _, r := me(t, e, res.Token); r.Status != 401 || r.ErrorCode() != "unauthenticated" {
			t.Fatalf("expired token = %d %s", r.Status, r.Body)
		}
	})
}

// TestConcurrentFirstLogins: twenty first logins of one person at once
// create one user — for one openid, and for one unionid reaching two apps of
// a scope with prefer_unionid.
func TestConcurrentFirstLogins(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "a", Platform: sandbox.WeChat, UnionScope: "brand"},
		{ID: "b", Platform: sandbox.QQ, UnionScope: "brand"},
	}})
	for _, tc := range []struct {
		name string
		user string
		apps []string
		want struct{ users, identities int }
	}{
		{"one openid", "jack", []string{"a"}, struct{ users, identities int }{1, 1}},
		{"one unionid in two apps", "kate", []string{"a", "b"}, struct{ users, identities int }{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 20
			codes := make([]string, n)
			apps := make([]string, n)
			for i := range n {
				apps[i] = tc.apps[i%len(tc.apps)]
				codes[i] = e.MintCode(apps[i], tc.user)
			}
			start := make(chan struct{})
			results := make([]*testenv.Response, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					results[i] = e.Do("POST", "/v1/apps/"+e.App(apps[i]).ID+"/sessions", loginBody(codes[i], true))
				}()
			}
			began := time.Now()
			close(start)
			wg.Wait()
			t.Logf("%d concurrent first logins took %v", n, time.Since(began))
			userIDs := map[string]bool{}
			for _, r := range results {
				if r.Status != 201 {
					t.Fatalf("login = %d %s", r.Status, r.Body)
				}
				var res loginResponse
				r.Decode(t, &res)
				userIDs[res.User.ID] = true
			}
			if len(userIDs) != 1 {
				t.Fatalf("logins returned %d users: %v", len(userIDs), userIDs)
			}
			var userID string
			for id := range userIDs {
				userID = id
			}
			openIDs := []string{}
			for _, app := range tc.apps {
				o, _ := wantIdentity(e, app, tc.user)
				openIDs = append(openIDs, o)
			}
			users := count(t, e, `SELECT count(DISTINCT user_id) FROM identities WHERE openid = ANY($1)`, pq.Array(openIDs))
			identities := count(t, e, `SELECT count(*) FROM identities WHERE user_id = $1`, userID)
			sessions := count(t, e, `SELECT count(*) FROM sessions WHERE user_id = $1`, userID)
			if users != tc.want.users || identities != tc.want.identities || sessions != n {
				t.Fatalf("users %d identities %d sessions %d, want %d %d %d",
					users, identities, sessions, tc.want.users, tc.want.identities, n)
			}
		})
	}
}

// TestPhoneNumber: WeChat resolves getPhoneNumber codes through the shared
// access token, which is fetched once and refreshed once after the platform
// invalidates it; the other platforms answer 501.
func TestPhoneNumber(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "wx", Platform: sandbox.WeChat},
		{ID: "qq", Platform: sandbox.QQ},
		{ID: "ali", Platform: sandbox.Alipay},
	}})
	wx := e.App("wx").ID
	res := login(t, e, "wx", "lena", false)
	want := e.Sandbox.User(e.SandboxApp("wx"), "lena").Phone
	phone := func(code string) *testenv.Response {
		return e.Do("POST", "/v1/me/phone", map[string]any{"code": code}, testenv.Bearer(res.Token))
	}
	phoneCode := func() string {
		c, err := e.Sandbox.MintCode(wx, "lena", "phone")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("verified and stored", func(t *testing.T) {
		code := phoneCode()
		r := phone(code)
		var got struct {
			PhoneNumber     string `json:"phone_number"`
			PurePhoneNumber string `json:"pure_phone_number"`
		}
		r.Decode(t, &got)
		if r.Status != 200 || !strings.HasSuffix(got.PhoneNumber, want) || got.PurePhoneNumber != want {
			t.Fatalf("phone = %d %s, want %s", r.Status, r.Body, want)
		}
		m, mr := me(t, e, res.Token)
		if mr.Status != 200 || m.Phone == nil || m.Phone.PurePhoneNumber != want {
			t.Fatalf("GET /v1/me = %s", mr.Body)
		}
		if r := phone(code); r.Status != 400 || r.ErrorCode() != "invalid_code" {
			t.Fatalf("reused phone code = %d %s", r.Status, r.Body)
		}
		if r := phone(""); r.Status != 400 || r.ErrorCode() != "invalid_code" {
			t.Fatalf("empty phone code = %d %s", r.Status, r.Body)
		}
	})

	t.Run("one access token, refreshed once when invalidated", func(t *testing.T) {
		before := e.Sandbox.WeChatTokenStats(wx)
		for range 3 {
			if r := phone(phoneCode()); r.Status != 200 {
				t.Fatalf("phone = %d %s", r.Status, r.Body)
			}
		}
		if got := e.Sandbox.WeChatTokenStats(wx); got.Issued > 1 || got.ForceRefreshes != 0 {
			t.Fatalf("token stats %+v (before %+v): tokens were fetched per call", got, before)
		}
		e.Sandbox.InvalidateWeChatTokens(wx)
		if r := phone(phoneCode()); r.Status != 200 {
			t.Fatalf("phone after invalidation = %d %s", r.Status, r.Body)
		}
		got := e.Sandbox.WeChatTokenStats(wx)
		if got.Issued != 2 || got.ForceRefreshes != 1 {
			t.Fatalf("token stats after invalidation %+v, want 2 issued, 1 forced", got)
		}
		var fetches int
		if err := e.DB.Get(&fetches, `SELECT fetch_count FROM access_tokens WHERE app = $1`, wx); err != nil || fetches != 2 {
			t.Fatalf("stored fetch_count = %d, %v", fetches, err)
		}
	})

	for _, app := range []string{"qq", "ali"} {
		t.Run(app+" is unsupported", func(t *testing.T) {
			tok := login(t, e, app, "lena", false).Token
			r := e.Do("POST", "/v1/me/phone", map[string]any{"code": "any"}, testenv.Bearer(tok))
			if r.Status != 501 || r.ErrorCode() != "unsupported_by_platform" {
				t.Fatalf("phone = %d %s", r.Status, r.Body)
			}
		})
	}
}

// encrypt encrypts user data as the mini-program client receives it.
func encrypt(t *testing.T, sessionKey string, v any) (data, iv string) {
	t.Helper()
	plain, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	ivb := make([]byte, aes.BlockSize)
	_, _ = rand.Read(ivb)
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, ivb).CryptBlocks(plain, plain)
	return base64.StdEncoding.EncodeToString(plain), base64.StdEncoding.EncodeToString(ivb)
}

// TestDecrypt opens user data encrypted with the session key the simulator
// issued, checks the watermark, and refuses data for the wrong key or app.
func TestDecrypt(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "wx", Platform: sandbox.WeChat},
		{ID: "qq", Platform: sandbox.QQ},
		{ID: "ali", Platform: sandbox.Alipay},
	}})
	for _, app := range []string{"wx", "qq"} {
		t.Run(app, func(t *testing.T) {
			res := login(t, e, app, "mona", false)
			key := e.Sandbox.SessionKey(e.App(app).ID, "mona")
			if key == "" {
				t.Fatal("the simulator kept no session key")
			}
			decrypt := func(tok, data, iv string) *testenv.Response {
				return e.Do("POST", "/v1/me/decrypt", map[string]any{"encrypted_data": data, "iv": iv}, testenv.Bearer(tok))
			}
			userInfo := map[string]any{
				"openId": res.User.OpenID, "nickName": "Mona",
				"watermark": map[string]any{"appid": e.App(app).AppID, "timestamp": time.Now().Unix()},
			}
			data, iv := encrypt(t, key, userInfo)
			r := decrypt(res.Token, data, iv)
			var got map[string]any
			r.Decode(t, &got)
			if r.Status != 200 || got["nickName"] != "Mona" || got["openId"] != res.User.OpenID {
				t.Fatalf("decrypt = %d %s", r.Status, r.Body)
			}
			if app == "wx" {
				simData, simIV, err := e.Sandbox.WeChatEncryptedUserData(e.App(app).ID, "mona")
				if err != nil {
					t.Fatal(err)
				}
				if r := decrypt(res.Token, simData, simIV); r.Status != 200 || !strings.Contains(string(r.Body), `"nickName":"mona"`) {
					t.Fatalf("decrypt simulator data = %d %s", r.Status, r.Body)
				}
			}

			foreign, fiv := encrypt(t, key, map[string]any{"openId": "x", "watermark": map[string]any{"appid": "wx0000000000000000"}})
			for _, tc := range []struct {
				name, data, iv string
				status         int
				code           string
			}{
				{"foreign watermark", foreign, fiv, 400, "watermark_mismatch"},
				{"missing iv", data, "", 400, "invalid_encrypted_data"},
				{"iv not base64", data, "!!", 400, "invalid_encrypted_data"},
				{"data not base64", "%%%", iv, 400, "invalid_encrypted_data"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if r := decrypt(res.Token, tc.data, tc.iv); r.Status != tc.status || r.ErrorCode() != tc.code {
						t.Fatalf("= %d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
					}
				})
			}

			t.Run("data for an older session key", func(t *testing.T) {
				login(t, e, app, "mona", false) // a new session_key replaces the stored one
				if e.Sandbox.SessionKey(e.App(app).ID, "mona") == key {
					t.Fatal("the simulator reissued the same session key")
				}
				if r := decrypt(res.Token, data, iv); r.Status != 400 || r.ErrorCode() != "decrypt_failed" {
					t.Fatalf("= %d %s, want 400 decrypt_failed", r.Status, r.Body)
				}
			})
		})
	}
	t.Run("alipay is unsupported", func(t *testing.T) {
		tok := login(t, e, "ali", "mona", false).Token
		r := e.Do("POST", "/v1/me/decrypt", map[string]any{"encrypted_data": "AAAA", "iv": "AAAA"}, testenv.Bearer(tok))
		if r.Status != 501 || r.ErrorCode() != "unsupported_by_platform" {
			t.Fatalf("decrypt = %d %s", r.Status, r.Body)
		}
	})
}

// TestPlatformErrors: platform failures become the contract's API errors,
// and a failed login stores nothing.
func TestPlatformErrors(t *testing.T) {
	t.Parallel()
	// A QQ API that drops or stalls every call, to see unreachable and
	// timeout.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("js_code") == "stall" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(broken.Close)
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}}})
	q := testenv.Start(t, testenv.Spec{
		Apps: []sandbox.AppSpec{{ID: "qq", Platform: sandbox.QQ}},
		Configure: func(c *config.Config) {
			c.Endpoints.QQAPI = broken.URL
			c.Limits.UpstreamTimeout = 300 * time.Millisecond
		},
	})
	wx := e.App("wx").ID
	for _, tc := range []struct {
		name   string
		env    *testenv.Env
		app    string
		code   func() string
		status int
		want   string
	}{
		{"busy", e, "wx", func() string {
			e.Sandbox.FailWeChat(wx, sandbox.WeChatError{API: "jscode2session", ErrCode: -1, ErrMsg: "system error"})
			return e.MintCode("wx", "nina")
		}, 502, "platform_busy"},
		{"rate limited", e, "wx", func() string {
			e.Sandbox.FailWeChat(wx, sandbox.WeChatError{API: "jscode2session", ErrCode: 45011, ErrMsg: "minute-quota reach limit"})
			return e.MintCode("wx", "nina")
		}, 429, "rate_limited"},
		{"high-risk user", e, "wx", func() string { return e.MintCode("wx", "risky-omar") }, 403, "high_risk_user"},
		{"phone code used to log in", e, "wx", func() string {
			c, err := e.Sandbox.MintCode(wx, "nina", "phone")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, 400, "invalid_code"},
		{"unreachable", q, "qq", func() string { return "drop" }, 502, "platform_unavailable"},
		{"timeout", q, "qq", func() string { return "stall" }, 504, "platform_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.env.Do("POST", "/v1/apps/"+tc.env.App(tc.app).ID+"/sessions", loginBody(tc.code(), false))
			if r.Status != tc.status || r.ErrorCode() != tc.want {
				t.Fatalf("login = %d %s, want %d %s", r.Status, r.Body, tc.status, tc.want)
			}
			if n := count(t, tc.env, `SELECT count(*) FROM users`); n != 0 {
				t.Fatalf("a failed login created %d users", n)
			}
		})
	}
}
