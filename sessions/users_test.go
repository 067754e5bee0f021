package sessions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
)

// userView is the users API's user.
type userView struct {
	ID          string            `json:"id"`
	Metadata    map[string]any    `json:"metadata"`
	ExternalIDs map[string]string `json:"external_ids"`
	UnionIDs    []struct {
		UnionScope string `json:"union_scope"`
		UnionID    string `json:"unionid"`
	} `json:"unionids"`
	Phone *struct {
		PhoneNumber string `json:"phone_number"`
	} `json:"phone"`
	Identities []identityView `json:"identities"`
}

type identityView struct {
	ID          string     `json:"id"`
	App         string     `json:"app"`
	Platform    string     `json:"platform"`
	OpenID      string     `json:"openid"`
	UnionID     *string    `json:"unionid"`
	Source      string     `json:"source"`
	LastLoginAt *time.Time `json:"last_login_at"`
}

func (u *userView) identity(app string) *identityView {
	for i := range u.Identities {
		if u.Identities[i].App == app {
			return &u.Identities[i]
		}
	}
	return nil
}

// link has the session's user link user name's identity in app (short
// name) and returns the response.
func link(e *testenv.Env, token, app, name string) *testenv.Response {
	return e.Do("POST", "/v1/me/identities", map[string]any{"app": e.App(app).ID, "code": e.MintCode(app, name)}, testenv.Bearer(token))
}

func getUser(t *testing.T, e *testenv.Env, id string) userView {
	t.Helper()
	var u userView
	e.Do("GET", "/v1/users/"+id, nil, testenv.Operator()).Expect(t, http.StatusOK, "get user "+id, &u)
	return u
}

// TestLink: a user links identities of the two other platforms' apps (and
// another app of its own platform); their later logins land on it; an
// identity of another user is refused, never moved.
func TestLink(t *testing.T) {
	t.Parallel()
	for _, pc := range platformCases {
		t.Run(pc.name, func(t *testing.T) {
			t.Parallel()
			e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
				{ID: "home", Platform: pc.platform, UnionScope: "brand"},
				{ID: "wx", Platform: sandbox.WeChat},
				{ID: "qq", Platform: sandbox.QQ},
				{ID: "ali", Platform: sandbox.Alipay},
			}})
			alice := e.Login(t, "home", "alice")
			for _, app := range []string{"wx", "qq", "ali"} {
				var u userView
				link(e, alice.Token, app, "alice").Expect(t, http.StatusCreated, "link "+app, &u)
				if u.ID != alice.UserID {
					t.Fatalf("link %s answered user %s, want %s", app, u.ID, alice.UserID)
				}
				id := u.identity(e.App(app).ID)
				wantOpenID, _ := wantIdentity(e, app, "alice")
				if id == nil || id.OpenID != wantOpenID || id.Source != "link" || !strings.HasPrefix(id.ID, "idn_") {
					t.Fatalf("linked identity in %s = %+v, want openid %s source link", app, id, wantOpenID)
				}
				// A later login of the linked identity lands on alice.
				if got := login(t, e, app, "alice", false); got.User.ID != alice.UserID {
					t.Fatalf("login %s after link = user %s, want %s", app, got.User.ID, alice.UserID)
				}
			}
			m, _ := me(t, e, alice.Token)
			if len(m.Identities) != 4 {
				t.Fatalf("/v1/me identities = %+v, want 4", m.Identities)
			}

			t.Run("linking it again answers 200", func(t *testing.T) {
				var u userView
				link(e, alice.Token, "qq", "alice").Expect(t, http.StatusOK, "link again", &u)
				if len(u.Identities) != 4 {
					t.Fatalf("identities = %d, want 4", len(u.Identities))
				}
			})
			t.Run("another user's identity is 409 identity_in_use", func(t *testing.T) {
				bob := e.Login(t, "qq", "bob")
				r := link(e, alice.Token, "wx", "bob")
				if r.Status != http.StatusConflict || r.ErrorCode() != "app_already_linked" {
					t.Fatalf("second identity in one app = %d %s", r.Status, r.Body)
				}
				carol := e.Login(t, "home", "carol")
				r = link(e, carol.Token, "qq", "bob")
				if r.Status != http.StatusConflict || r.ErrorCode() != "identity_in_use" {
					t.Fatalf("link bob's identity = %d %s, want 409 identity_in_use", r.Status, r.Body)
				}
				if got := login(t, e, "qq", "bob", false); got.User.ID != bob.UserID {
					t.Fatalf("bob's login moved to %s", got.User.ID)
				}
			})
			t.Run("bad input changes nothing", func(t *testing.T) {
				for _, body := range []any{
					map[string]any{"app": e.App("wx").ID},
					map[string]any{"code": "x"},
					map[string]any{"app": "nope", "code": "x"},
					map[string]any{"app": e.App("wx").ID, "code": strings.Repeat("x", 300)},
					`{"app": 1}`,
				} {
					r := e.Do("POST", "/v1/me/identities", body, testenv.Bearer(alice.Token))
					if r.Status != 400 && r.Status != 404 {
						t.Fatalf("link %v = %d %s", body, r.Status, r.Body)
					}
				}
				r := e.Do("POST", "/v1/me/identities", map[string]any{"app": e.App("wx").ID, "code": "used-or-unknown"}, testenv.Bearer(alice.Token))
				if r.Status != 400 || r.ErrorCode() != "invalid_code" {
					t.Fatalf("unknown code = %d %s", r.Status, r.Body)
				}
				if r := e.Do("POST", "/v1/me/identities", map[string]any{"app": e.App("wx").ID, "code": "x"}, testenv.Operator()); r.Status != 403 {
					t.Fatalf("link with an API key = %d", r.Status)
				}
				if n := count(t, e, `SELECT count(*) FROM identities WHERE user_id = $1`, alice.UserID); n != 4 {
					t.Fatalf("alice has %d identities", n)
				}
			})
		})
	}
}

// TestConcurrentLinks: several users link one identity at once — in some
// rounds while it also logs in for the first time: it ends up with exactly
// one user, and every answer agrees with that.
func TestConcurrentLinks(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "a", Platform: sandbox.WeChat},
		{ID: "b", Platform: sandbox.Alipay},
	}})
	for round := range 4 {
		target := fmt.Sprintf("dora%d", round)
		withLogin := round%2 == 1
		const linkers = 4
		tokens := make([]string, linkers)
		userIDs := make([]string, linkers)
		codes := make([]string, linkers+1)
		for i := range linkers {
			s := e.Login(t, "a", fmt.Sprintf("linker%d-%d", round, i))
			tokens[i], userIDs[i] = s.Token, s.UserID
		}
		for i := range codes {
			codes[i] = e.MintCode("b", target)
		}
		results := make([]*testenv.Response, linkers+1)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range linkers + 1 {
			if i == linkers && !withLogin {
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if i == linkers { // the identity's own first login
					results[i] = e.Do("POST", "/v1/apps/"+e.App("b").ID+"/sessions", loginBody(codes[i], false))
					return
				}
				results[i] = e.Do("POST", "/v1/me/identities", map[string]any{"app": e.App("b").ID, "code": codes[i]}, testenv.Bearer(tokens[i]))
			}()
		}
		close(start)
		wg.Wait()
		openID, _ := wantIdentity(e, "b", target)
		var owner string
		if err := e.DB.Get(&owner, `SELECT user_id FROM identities WHERE app = $1 AND openid = $2`, e.App("b").ID, openID); err != nil {
			t.Fatalf("the identity: %v", err)
		}
		winner := ""
		for i, r := range results[:linkers] {
			switch {
			case r.Status == http.StatusCreated && winner == "":
				winner = userIDs[i]
			case r.Status == http.StatusConflict && r.ErrorCode() == "identity_in_use":
			default:
				t.Fatalf("round %d: link %d = %d %s", round, i, r.Status, r.Body)
			}
		}
		switch {
		case withLogin:
			var lr loginResponse
			results[linkers].Expect(t, http.StatusCreated, "first login", &lr)
			if lr.User.ID != owner || (winner != "" && winner != owner) {
				t.Fatalf("round %d: login landed on %s, link won by %q, identity owned by %s", round, lr.User.ID, winner, owner)
			}
		case winner != owner:
			t.Fatalf("round %d: link won by %q, identity owned by %s", round, winner, owner)
		}
	}
}

// TestUnlink: never the last identity nor the session's own; an unlinked
// identity's tokens stop working and its next login creates a new user.
func TestUnlink(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "a", Platform: sandbox.WeChat},
		{ID: "b", Platform: sandbox.QQ},
	}})
	alice := e.Login(t, "a", "alice")
	var u userView
	link(e, alice.Token, "b", "alice").Expect(t, http.StatusCreated, "link", &u)
	idA, idB := u.identity(e.App("a").ID).ID, u.identity(e.App("b").ID).ID
	onB := e.Login(t, "b", "alice") // a session of the linked identity

	r := e.Do("DELETE", "/v1/me/identities/"+idA, nil, testenv.Bearer(alice.Token))
	if r.Status != http.StatusConflict || r.ErrorCode() != "current_identity" {
		t.Fatalf("unlink the session's identity = %d %s", r.Status, r.Body)
	}
	for _, id := range []string{"idn_01JD8X3Z6Q4V9K2M7N5P8R1T3W", "nope"} {
		if r := e.Do("DELETE", "/v1/me/identities/"+id, nil, testenv.Bearer(alice.Token)); r.Status != 404 {
			t.Fatalf("unlink %s = %d %s", id, r.Status, r.Body)
		}
	}
	bob := e.Login(t, "a", "bob")
	bobID := getUser(t, e, bob.UserID).Identities[0].ID
	if r := e.Do("DELETE", "/v1/me/identities/"+bobID, nil, testenv.Bearer(alice.Token)); r.Status != 404 {
		t.Fatalf("unlink another user's identity = %d %s", r.Status, r.Body)
	}
	if r := e.Do("DELETE", "/v1/me/identities/"+bobID, nil, testenv.Bearer(bob.Token)); r.Status != 409 || r.ErrorCode() != "last_identity" {
		t.Fatalf("unlink the last identity = %d %s", r.Status, r.Body)
	}

	e.Do("DELETE", "/v1/me/identities/"+idB, nil, testenv.Bearer(alice.Token)).Expect(t, http.StatusOK, "unlink", &u)
	if len(u.Identities) != 1 || u.Identities[0].ID != idA {
		t.Fatalf("after unlink: %+v", u.Identities)
	}
	if _, r := me(t, e, onB.Token); r.Status != 401 {
		t.Fatalf("a token of the unlinked identity = %d, want 401", r.Status)
	}
	if got := login(t, e, "b", "alice", false); got.User.ID == alice.UserID {
		t.Fatal("the unlinked identity still logs in to alice")
	}
	if _, r := me(t, e, alice.Token); r.Status != 200 {
		t.Fatalf("alice's own session = %d", r.Status)
	}
}

// TestUsersAPI: get and the lookups, with the API key only.
func TestUsersAPI(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "a", Platform: sandbox.WeChat, UnionScope: "brand"},
		{ID: "b", Platform: sandbox.WeChat, UnionScope: "brand"},
	}})
	alice := e.Login(t, "a", "alice")
	alice2 := e.Login(t, "b", "alice") // no prefer_unionid: a second user with the same unionid
	code, err := e.Sandbox.MintCode(e.App("a").ID, "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	var phone struct {
		PhoneNumber string `json:"phone_number"`
	}
	e.Do("POST", "/v1/me/phone", map[string]any{"code": code}, testenv.Bearer(alice.Token)).Expect(t, 200, "phone", &phone)

	u := getUser(t, e, alice.UserID)
	openID, unionID := wantIdentity(e, "a", "alice")
	if len(u.Identities) != 1 || u.Identities[0].OpenID != openID || u.Phone == nil || u.Phone.PhoneNumber != phone.PhoneNumber ||
		u.Metadata == nil || u.ExternalIDs == nil {
		t.Fatalf("user = %+v", u)
	}
	raw := e.Do("GET", "/v1/users/"+alice.UserID, nil, testenv.Operator()).Body
	if strings.Contains(string(raw), "session_key") {
		t.Fatalf("the user shows a session key: %s", raw)
	}

	type page struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
		NextCursor string `json:"next_cursor"`
	}
	lookup := func(q string) page {
		t.Helper()
		var p page
		e.Do("GET", "/v1/users?"+q, nil, testenv.Operator()).Expect(t, 200, "lookup "+q, &p)
		return p
	}
	if p := lookup("app=" + e.App("a").ID + "&openid=" + openID); len(p.Data) != 1 || p.Data[0].ID != alice.UserID {
		t.Fatalf("by openid: %+v", p)
	}
	if p := lookup("app=" + e.App("b").ID + "&openid=" + openID); len(p.Data) != 0 {
		t.Fatalf("an openid of another app: %+v", p)
	}
	p := lookup("union_scope=brand&unionid=" + unionID + "&limit=1")
	if len(p.Data) != 1 || p.NextCursor == "" {
		t.Fatalf("by unionid, page 1: %+v", p)
	}
	p2 := lookup("union_scope=brand&unionid=" + unionID + "&limit=1&cursor=" + p.NextCursor)
	if len(p2.Data) != 1 || p2.Data[0].ID == p.Data[0].ID {
		t.Fatalf("by unionid, page 2: %+v", p2)
	}
	got := map[string]bool{p.Data[0].ID: true, p2.Data[0].ID: true}
	if !got[alice.UserID] || !got[alice2.UserID] {
		t.Fatalf("by unionid: %v, want %s and %s", got, alice.UserID, alice2.UserID)
	}
	if p3 := lookup("union_scope=brand&unionid=" + unionID + "&limit=1&cursor=" + p2.NextCursor); len(p3.Data) != 0 || p3.NextCursor != "" {
		t.Fatalf("by unionid, page 3: %+v", p3)
	}
	for _, q := range []string{phone.PhoneNumber, "+86" + phone.PhoneNumber, "+86 " + phone.PhoneNumber[:3] + "-" + phone.PhoneNumber[3:]} {
		if p := lookup("phone=" + urlQuery(q)); len(p.Data) != 1 || p.Data[0].ID != alice.UserID {
			t.Fatalf("by phone %q: %+v", q, p)
		}
	}

	for _, tc := range []struct{ q, code string }{
		{"", "invalid_lookup"},
		{"app=" + e.App("a").ID, "invalid_openid"},
		{"phone=12345678901&app=x&openid=y", "invalid_lookup"},
		{"phone=abc", "invalid_phone"},
		{"phone=1&cursor=usr_x", "invalid_cursor"},
		{"phone=13800000000&limit=0", "invalid_limit"},
	} {
		if r := e.Do("GET", "/v1/users?"+tc.q, nil, testenv.Operator()); r.Status != 400 || r.ErrorCode() != tc.code {
			t.Fatalf("lookup %q = %d %s, want 400 %s", tc.q, r.Status, r.Body, tc.code)
		}
	}
	for _, id := range []string{"usr_01JD8X3Z6Q4V9K2M7N5P8R1T3W", "nope"} {
		if r := e.Do("GET", "/v1/users/"+id, nil, testenv.Operator()); r.Status != 404 || r.ErrorCode() != "user_not_found" {
			t.Fatalf("get %s = %d %s", id, r.Status, r.Body)
		}
	}
	if r := e.Do("GET", "/v1/users/"+alice.UserID, nil); r.Status != 401 {
		t.Fatalf("without credentials = %d", r.Status)
	}
	if r := e.Do("GET", "/v1/users/"+alice.UserID, nil, testenv.Bearer(alice.Token)); r.Status != 403 {
		t.Fatalf("with a session token = %d", r.Status)
	}
}

func urlQuery(s string) string {
	return strings.NewReplacer("+", "%2B", " ", "%20").Replace(s)
}

// TestMetadata: PATCH merges keys, null removes one, "metadata": null
// clears; the bounds refuse and change nothing.
func TestMetadata(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{{ID: "a", Platform: sandbox.QQ}}})
	alice := e.Login(t, "a", "alice")
	path := "/v1/users/" + alice.UserID
	patch := func(body any) *testenv.Response { return e.Do("PATCH", path, body, testenv.Operator()) }
	var u userView
	patch(map[string]any{"metadata": map[string]any{"tier": "gold", "points": 12, "tags": []string{"a"}}}).Expect(t, 200, "patch", &u)
	u = userView{}
	patch(map[string]any{"metadata": map[string]any{"points": 13, "tags": nil}}).Expect(t, 200, "merge", &u)
	if fmt.Sprint(u.Metadata) != "map[points:13 tier:gold]" {
		t.Fatalf("metadata = %v", u.Metadata)
	}
	if got := getUser(t, e, alice.UserID); fmt.Sprint(got.Metadata) != "map[points:13 tier:gold]" {
		t.Fatalf("stored metadata = %v", got.Metadata)
	}

	many := map[string]any{}
	for i := range 51 {
		many[fmt.Sprintf("k%d", i)] = i
	}
	for _, tc := range []struct {
		name string
		body any
		code string
	}{
		{"51 keys", map[string]any{"metadata": many}, "invalid_metadata"},
		{"long key", map[string]any{"metadata": map[string]any{strings.Repeat("k", 41): 1}}, "invalid_metadata"},
		{"empty key", map[string]any{"metadata": map[string]any{"": 1}}, "invalid_metadata"},
		{"too large", map[string]any{"metadata": map[string]any{"big": strings.Repeat("x", 9000)}}, "metadata_too_large"},
		{"not an object", map[string]any{"metadata": []int{1}}, "invalid_metadata"},
		{"missing", map[string]any{}, "invalid_metadata"},
		{"unknown field", map[string]any{"metadata": map[string]any{}, "phone": "1"}, "invalid_json"},
	} {
		if r := patch(tc.body); r.Status != 400 || r.ErrorCode() != tc.code {
			t.Fatalf("%s = %d %s, want 400 %s", tc.name, r.Status, r.Body, tc.code)
		}
	}
	if r := patch(strings.Repeat(" ", 40<<10) + `{"metadata":{}}`); r.Status != 413 {
		t.Fatalf("a 40 KiB body = %d", r.Status)
	}
	if got := getUser(t, e, alice.UserID); fmt.Sprint(got.Metadata) != "map[points:13 tier:gold]" {
		t.Fatalf("refused patches changed metadata: %v", got.Metadata)
	}
	u = userView{}
	patch(`{"metadata": null}`).Expect(t, 200, "clear", &u)
	if len(u.Metadata) != 0 {
		t.Fatalf("cleared metadata = %v", u.Metadata)
	}
	if r := patch(map[string]any{"metadata": map[string]any{"a": 1}}); r.Status != 200 {
		t.Fatal(r.Status)
	}
	if r := e.Do("PATCH", "/v1/users/usr_01JD8X3Z6Q4V9K2M7N5P8R1T3W", map[string]any{"metadata": map[string]any{}}, testenv.Operator()); r.Status != 404 {
		t.Fatalf("unknown user = %d", r.Status)
	}
}

// TestErasure: DELETE /v1/users/{id} erases identities, tokens, session
// keys, phone, metadata and the inbox (and its copies in callbacks and
// events), keeps orders readable with the payer pseudonymised, publishes
// user.deleted once, and a later login creates a fresh user.
func TestErasure(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "shop", Platform: sandbox.WeChat, Pay: true, UnionScope: "brand"},
		{ID: "qq", Platform: sandbox.QQ, UnionScope: "brand"},
	}})
	ctx := context.Background()
	app := e.App("shop").ID
	alice := e.Login(t, "shop", "alice")
	link(e, alice.Token, "qq", "alice").Expect(t, http.StatusCreated, "link", nil)
	bob := e.Login(t, "shop", "bob") // untouched by alice's erasure
	code, err := e.Sandbox.MintCode(app, "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	e.Do("POST", "/v1/me/phone", map[string]any{"code": code}, testenv.Bearer(alice.Token)).Expect(t, 200, "phone", nil)
	e.Do("PATCH", "/v1/users/"+alice.UserID, map[string]any{"metadata": map[string]any{"nick": "Alice"}}, testenv.Operator()).Expect(t, 200, "metadata", nil)
	for _, who := range []string{"alice", "bob"} {
		rep, err := e.Sandbox.Push(ctx, e.SandboxApp("shop"), who, sandbox.PushRequest{Type: "text", Content: "secret words of " + who})
		if err != nil || len(rep.Deliveries) == 0 || !rep.Deliveries[0].Acked {
			t.Fatalf("push: %v %+v", err, rep)
		}
	}
	type orderView struct {
		ID     string  `json:"id"`
		Status string  `json:"status"`
		UserID *string `json:"user_id"`
		OpenID string  `json:"openid"`
		Amount int64   `json:"amount"`
		Events []struct {
			Kind string `json:"kind"`
		} `json:"events"`
	}
	var o orderView
	e.Do("POST", "/v1/apps/"+app+"/orders", map[string]any{"user_id": alice.UserID, "amount": 250, "description": "coffee"},
		testenv.Operator(), testenv.Header(orders.HeaderIdempotencyKey, "erase-1")).Expect(t, 201, "create order", &o)
	e.Do("POST", "/v1/orders/"+o.ID+"/pay", nil, testenv.Bearer(alice.Token)).Expect(t, 200, "pay params", nil)
	var outTradeNo string
	if err := e.DB.Get(&outTradeNo, `SELECT out_trade_no FROM orders WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Sandbox.Pay(ctx, e.SandboxApp("shop"), outTradeNo, sandbox.Faults{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "order paid", func() bool {
		e.Do("GET", "/v1/orders/"+o.ID, nil, testenv.Operator()).Expect(t, 200, "get order", &o)
		return o.Status == "paid"
	})
	openID, _ := wantIdentity(e, "shop", "alice")
	qqOpenID, _ := wantIdentity(e, "qq", "alice")
	mentions := func() int {
		t.Helper()
		return count(t, e, `SELECT
		  (SELECT count(*) FROM callbacks WHERE strpos(payload::text, $1) > 0 OR strpos(payload::text, 'secret words of alice') > 0) +
		  (SELECT count(*) FROM events WHERE strpos(data::text, $1) > 0 OR strpos(data::text, 'secret words of alice') > 0) +
		  (SELECT count(*) FROM messages WHERE openid = $1 OR content LIKE '%of alice') +
		  (SELECT count(*) FROM conversations WHERE openid = $1) +
		  (SELECT count(*) FROM orders WHERE payer_openid = $1)`, openID)
	}
	if n := mentions(); n < 5 {
		t.Fatalf("before the erasure alice appears %d times; the test sees too little", n)
	}

	var d struct {
		ID        string    `json:"id"`
		Deleted   bool      `json:"deleted"`
		DeletedAt time.Time `json:"deleted_at"`
		DeletedBy string    `json:"deleted_by"`
	}
	e.Do("DELETE", "/v1/users/"+alice.UserID, nil, testenv.Operator()).Expect(t, 200, "delete", &d)
	if d.ID != alice.UserID || !d.Deleted || d.DeletedBy != "test" {
		t.Fatalf("deletion = %+v", d)
	}

	if n := mentions(); n != 0 {
		t.Fatalf("after the erasure alice still appears %d times", n)
	}
	for _, q := range []string{
		`SELECT count(*) FROM identities WHERE user_id = $1`,
		`SELECT count(*) FROM sessions WHERE user_id = $1`,
		`SELECT count(*) FROM users WHERE id = $1 AND (phone_number IS NOT NULL OR metadata <> '{}' OR deleted_at IS NULL)`,
	} {
		if n := count(t, e, q, alice.UserID); n != 0 {
			t.Fatalf("%s = %d", q, n)
		}
	}
	if n := count(t, e, `SELECT count(*) FROM identities WHERE openid = $1 OR openid = $2`, openID, qqOpenID); n != 0 {
		t.Fatalf("alice's identities remain: %d", n)
	}
	if n := count(t, e, `SELECT count(*) FROM messages WHERE content = 'secret words of bob'`); n != 1 {
		t.Fatalf("bob's message: %d", n)
	}
	if r := e.Do("GET", "/v1/users/"+alice.UserID, nil, testenv.Operator()); r.Status != 404 || r.ErrorCode() != "user_deleted" {
		t.Fatalf("get an erased user = %d %s", r.Status, r.Body)
	}
	if _, r := me(t, e, alice.Token); r.Status != 401 {
		t.Fatalf("an erased user's token = %d", r.Status)
	}
	if _, r := me(t, e, bob.Token); r.Status != 200 {
		t.Fatalf("bob's token = %d", r.Status)
	}

	// The order is still there for accounting, with its payer pseudonymised.
	e.Do("GET", "/v1/orders/"+o.ID, nil, testenv.Operator()).Expect(t, 200, "get order", &o)
	if o.Status != "paid" || o.Amount != 250 || o.UserID == nil || *o.UserID != alice.UserID || !strings.HasPrefix(o.OpenID, "erased_") {
		t.Fatalf("order after erasure = %+v", o)
	}
	if o.Events[len(o.Events)-1].Kind != orders.KindPayerErased {
		t.Fatalf("timeline = %+v", o.Events)
	}
	var data json.RawMessage
	if err := e.DB.Get(&data, `SELECT data FROM events WHERE type = 'user.deleted'`); err != nil {
		t.Fatalf("user.deleted: %v", err)
	}
	if !strings.Contains(string(data), alice.UserID) {
		t.Fatalf("user.deleted data = %s", data)
	}

	// Erasing again answers the same and changes nothing.
	var d2 struct {
		DeletedAt time.Time `json:"deleted_at"`
	}
	e.Do("DELETE", "/v1/users/"+alice.UserID, nil, testenv.Operator()).Expect(t, 200, "delete again", &d2)
	if !d2.DeletedAt.Equal(d.DeletedAt) || count(t, e, `SELECT count(*) FROM events WHERE type = 'user.deleted'`) != 1 {
		t.Fatalf("second delete: %+v", d2)
	}
	if r := e.Do("DELETE", "/v1/users/usr_01JD8X3Z6Q4V9K2M7N5P8R1T3W", nil, testenv.Operator()); r.Status != 404 {
		t.Fatalf("delete unknown = %d", r.Status)
	}

	// A later login creates a fresh user, prefer_unionid or not.
	fresh := login(t, e, "shop", "alice", true)
	if fresh.User.ID == alice.UserID {
		t.Fatal("the erased user logged in again")
	}
	if got := login(t, e, "qq", "alice", true); got.User.ID != fresh.User.ID {
		t.Fatalf("qq login joined %s, want the fresh user %s by unionid", got.User.ID, fresh.User.ID)
	}
}
