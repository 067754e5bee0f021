package orders_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
)

func TestCreateOrder(t *testing.T) {
	t.Parallel()
	s := startSuite(t, merchantModes[0])
	path := "/v1/apps/" + s.app + "/orders"
	post := func(key string, body any) *testenv.Response {
		opts := []testenv.Opt{testenv.Operator()}
		if key != "" {
			opts = append(opts, testenv.Header(orders.HeaderIdempotencyKey, key))
		}
		return s.e.Do("POST", path, body, opts...)
	}

	t.Run("same key and body is the same order", func(t *testing.T) {
		t.Parallel()
		first := post("same-1", `{"user_id":"`+s.userID+`","amount":100,"description":"tea"}`)
		// The same request spelled differently.
		again := post("same-1", "{ \"description\": \"tea\",\n \"amount\": 100, \"user_id\": \""+s.userID+"\" }")
		var a, b orderView
		first.Decode(t, &a)
		again.Decode(t, &b)
		if first.Status != 201 || again.Status != 201 || a.ID == "" || a.ID != b.ID {
			t.Fatalf("first %d %s, again %d %s", first.Status, first.Body, again.Status, again.Body)
		}
		if again.Header.Get("Idempotent-Replayed") != "true" || first.Header.Get("Idempotent-Replayed") != "" {
			t.Fatal("replay not marked")
		}
		if a.PayParams["paySign"] == "" || a.PayParams["paySign"] != b.PayParams["paySign"] {
			t.Fatalf("replayed pay_params differ: %v vs %v", a.PayParams, b.PayParams)
		}
		if n := s.count(t, `SELECT count(*) FROM orders WHERE app = $1 AND description = 'tea'`, s.app); n != 1 {
			t.Fatalf("%d orders stored", n)
		}
	})

	t.Run("same key with another body is a conflict", func(t *testing.T) {
		t.Parallel()
		if r := post("diff-1", map[string]any{"user_id": s.userID, "amount": 100, "description": "a"}); r.Status != 201 {
			t.Fatalf("first: %d %s", r.Status, r.Body)
		}
		r := post("diff-1", map[string]any{"user_id": s.userID, "amount": 101, "description": "a"})
		if r.Status != 409 || r.ErrorCode() != "idempotency_key_reused" {
			t.Fatalf("reused key: %d %s", r.Status, r.Body)
		}
	})

	t.Run("rejected requests", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, key, body, code string
		}{
			{"no key", "", `{"openid":"o1","amount":1,"description":"d"}`, "idempotency_key_required"},
			{"key with spaces", "a b", `{"openid":"o1","amount":1,"description":"d"}`, "idempotency_key_required"},
			{"fraction", "v1", `{"openid":"o1","amount":1.5,"description":"d"}`, "invalid_amount"},
			{"whole float", "v2", `{"openid":"o1","amount":100.0,"description":"d"}`, "invalid_amount"},
			{"exponent", "v3", `{"openid":"o1","amount":1e2,"description":"d"}`, "invalid_amount"},
			{"string", "v4", `{"openid":"o1","amount":"100","description":"d"}`, "invalid_amount"},
			{"zero", "v5", `{"openid":"o1","amount":0,"description":"d"}`, "invalid_amount"},
			{"negative", "v6", `{"openid":"o1","amount":-1,"description":"d"}`, "invalid_amount"},
			{"missing amount", "v7", `{"openid":"o1","description":"d"}`, "invalid_amount"},
			{"too large", "v8", `{"openid":"o1","amount":10000000001,"description":"d"}`, "invalid_amount"},
			{"overflow", "v9", `{"openid":"o1","amount":99999999999999999999,"description":"d"}`, "invalid_amount"},
			{"no payer", "v10", `{"amount":1,"description":"d"}`, "invalid_payer"},
			{"two payers", "v11", `{"openid":"o1","user_id":"` + s.userID + `","amount":1,"description":"d"}`, "invalid_payer"},
			{"bad user id", "v12", `{"user_id":"alice","amount":1,"description":"d"}`, "invalid_user_id"},
			{"no description", "v13", `{"openid":"o1","amount":1}`, "invalid_description"},
			{"long description", "v14", `{"openid":"o1","amount":1,"description":"` + strings.Repeat("字", 128) + `"}`, "invalid_description"},
			{"short out_trade_no", "v15", `{"openid":"o1","amount":1,"description":"d","out_trade_no":"ab12"}`, "invalid_out_trade_no"},
			{"out_trade_no charset", "v16", `{"openid":"o1","amount":1,"description":"d","out_trade_no":"abc-1234"}`, "invalid_out_trade_no"},
			{"expires_in too short", "v17", `{"openid":"o1","amount":1,"description":"d","expires_in":59}`, "invalid_expires_in"},
			{"unknown field", "v18", `{"openid":"o1","amount":1,"description":"d","price":1}`, "invalid_json"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := post(tc.key, tc.body)
				if r.Status != 400 || r.ErrorCode() != tc.code {
					t.Fatalf("%s: %d %s, want 400 %s", tc.body, r.Status, r.Body, tc.code)
				}
			})
		}
		if n := s.count(t, `SELECT count(*) FROM orders WHERE payer_openid = 'o1'`); n != 0 {
			t.Fatalf("%d rejected orders stored", n)
		}
	})

	t.Run("unknown app, unknown user", func(t *testing.T) {
		t.Parallel()
		r := s.e.Do("POST", "/v1/apps/nope/orders", map[string]any{"openid": "o", "amount": 1, "description": "d"},
			testenv.Operator(), testenv.Header(orders.HeaderIdempotencyKey, "u1"))
		if r.Status != 404 || r.ErrorCode() != "app_not_found" {
			t.Fatalf("unknown app: %d %s", r.Status, r.Body)
		}
		r = post("u2", map[string]any{"user_id": "usr_01J0000000000000000000000Z", "amount": 1, "description": "d"})
		if r.Status != 404 || r.ErrorCode() != "user_not_found" {
			t.Fatalf("unknown user: %d %s", r.Status, r.Body)
		}
		if r := s.e.Do("POST", path, map[string]any{"openid": "o", "amount": 1, "description": "d"}, testenv.Bearer(s.token)); r.Status != 403 {
			t.Fatalf("a session token created an order: %d", r.Status)
		}
	})

	t.Run("given out_trade_no is kept and unique", func(t *testing.T) {
		t.Parallel()
		r := post("otn-1", map[string]any{"user_id": s.userID, "amount": 5, "description": "d", "out_trade_no": "SHOP_20240101_0001", "attach": "cart=7", "expires_in": 600})
		var o orderView
		r.Decode(t, &o)
		if r.Status != 201 || o.OutTradeNo != "SHOP_20240101_0001" {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		if r := post("otn-2", map[string]any{"user_id": s.userID, "amount": 5, "description": "d", "out_trade_no": "SHOP_20240101_0001"}); r.Status != 409 || r.ErrorCode() != "out_trade_no_used" {
			t.Fatalf("reused out_trade_no: %d %s", r.Status, r.Body)
		}
	})

	t.Run("openid payer resolves to the user", func(t *testing.T) {
		t.Parallel()
		r := post("oid-1", map[string]any{"openid": s.openID, "amount": 9, "description": "d"})
		var o orderView
		r.Decode(t, &o)
		if r.Status != 201 || o.UserID == nil || *o.UserID != s.userID {
			t.Fatalf("create by openid: %d %s", r.Status, r.Body)
		}
		if p := s.pay(t, o.ID); p.Status != "paying" {
			t.Fatalf("owner /pay: %s", p.Status)
		}
	})
}

func TestPrepayFailureIsRetryable(t *testing.T) {
	t.Parallel()
	s := startSuite(t, merchantModes[0])
	s.e.Sandbox.FailWeChatPay(s.e.App("shop").Pay.MchID, sandbox.WeChatPayError{API: "jsapi_prepay", Status: 500, Code: "SYSTEM_ERROR", Message: "busy"})
	body := map[string]any{"user_id": s.userID, "amount": 300, "description": "retry me"}
	post := func() *testenv.Response {
		return s.e.Do("POST", "/v1/apps/"+s.app+"/orders", body, testenv.Operator(), testenv.Header(orders.HeaderIdempotencyKey, "retry-1"))
	}
	r := post()
	r.Expect(t, http.StatusBadGateway, "failed prepay", nil)
	var stored struct {
		ID       string `db:"id"`
		Status   string `db:"status"`
		PrepayID string `db:"prepay_id"`
	}
	if err := s.e.DB.Get(&stored, `SELECT id, status, prepay_id FROM orders WHERE app = $1`, s.app); err != nil {
		t.Fatalf("the order was not stored before the platform call: %v", err)
	}
	if stored.Status != "created" || stored.PrepayID != "" {
		t.Fatalf("after the failed prepay: %+v", stored)
	}
	r = post()
	var o orderView
	r.Decode(t, &o)
	if r.Status != 201 || o.ID != stored.ID || o.PayParams["package"] == "" {
		t.Fatalf("retry: %d %s", r.Status, r.Body)
	}
	got := s.get(t, o.ID)
	if got.kinds(orders.KindPrepayFailed) != 1 || got.kinds(orders.KindPrepaid) != 1 {
		t.Fatalf("timeline: %+v", got.Events)
	}
}

func TestListOrders(t *testing.T) {
	t.Parallel()
	s := startSuite(t, merchantModes[0])
	start := time.Now().Add(-time.Second)
	var ids []string
	for range 5 {
		ids = append(ids, s.create(t, 10).ID)
	}
	s.paid(t, s.get(t, ids[1]).OutTradeNo, sandbox.Faults{})
	page := func(q string) (out struct {
		Data []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"data"`
		NextCursor string `json:"next_cursor"`
	}) {
		t.Helper()
		r := s.e.Do("GET", "/v1/orders?"+q, nil, testenv.Operator())
		if r.Status != 200 {
			t.Fatalf("list %s: %d %s", q, r.Status, r.Body)
		}
		r.Decode(t, &out)
		return out
	}
	var seen []string
	cursor := ""
	for i := 0; ; i++ {
		p := page("app=" + s.app + "&limit=2&cursor=" + cursor)
		for _, o := range p.Data {
			seen = append(seen, o.ID)
		}
		if p.NextCursor == "" || i > 5 {
			break
		}
		cursor = p.NextCursor
	}
	if len(seen) != 5 {
		t.Fatalf("paged %d orders: %v", len(seen), seen)
	}
	for i := range seen { // newest first
		if seen[i] != ids[4-i] {
			t.Fatalf("page order %v, want reverse of %v", seen, ids)
		}
	}
	if p := page("app=" + s.app + "&status=paid"); len(p.Data) != 1 || p.Data[0].ID != ids[1] {
		t.Fatalf("status filter: %+v", p.Data)
	}
	if p := page("app=" + s.app + "&from=" + start.UTC().Format(time.RFC3339) + "&to=" + start.Add(-time.Hour).UTC().Format(time.RFC3339)); len(p.Data) != 0 {
		t.Fatalf("empty range returned %d", len(p.Data))
	}
	if p := page("app=" + s.app + "&from=" + start.UTC().Format(time.RFC3339)); len(p.Data) != 5 {
		t.Fatalf("from filter returned %d", len(p.Data))
	}
	for _, q := range []string{"status=unpaid", "flag=other", "from=yesterday", "cursor=nope", "limit=0"} {
		if r := s.e.Do("GET", "/v1/orders?"+q, nil, testenv.Operator()); r.Status != 400 {
			t.Fatalf("list %s: %d %s", q, r.Status, r.Body)
		}
	}
	if r := s.e.Do("GET", "/v1/orders", nil, testenv.Bearer(s.token)); r.Status != 403 {
		t.Fatalf("list with a session token: %d", r.Status)
	}
}

func TestRefundRetriedAfterPlatformFailure(t *testing.T) {
	t.Parallel()
	s := startSuite(t, merchantModes[0])
	o := s.create(t, 100)
	s.pay(t, o.ID)
	s.paid(t, o.OutTradeNo, sandbox.Faults{})
	s.e.Sandbox.FailWeChatPay(s.e.App("shop").Pay.MchID, sandbox.WeChatPayError{API: "refund", Status: 500, Code: "SYSTEM_ERROR", Message: "busy", Times: 1})
	st, rf, _ := s.refund(t, o.ID, "retry-refund", 40)
	if st != http.StatusAccepted || rf.Status != "pending" {
		t.Fatalf("refund while the platform fails: %d %+v", st, rf)
	}
	// The reservation holds: more than the rest is refused meanwhile.
	if st, _, code := s.refund(t, o.ID, "retry-other", 61); st != 409 || code != "refund_exceeds_paid" {
		t.Fatalf("refund beyond the reservation: %d %s", st, code)
	}
	// Retrying with the same key sends the same out_refund_no again.
	st, again, _ := s.refund(t, o.ID, "retry-refund", 40)
	if st >= 300 || again.ID != rf.ID || again.OutRefundNo != rf.OutRefundNo {
		t.Fatalf("retried refund: %d %+v", st, again)
	}
	s.waitRefund(t, o.ID, rf.ID)
	if got := s.get(t, o.ID); got.Status != "partially_refunded" || got.RefundedAmount != 40 || len(got.Refunds) != 1 {
		t.Fatalf("after the retried refund: %s %d %d refunds", got.Status, got.RefundedAmount, len(got.Refunds))
	}
}
