package testenv

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

func exchange(method, target, reqBody string, status int, respBody string) Exchange {
	u, err := url.Parse("http://127.0.0.1:8080" + target)
	if err != nil {
		panic(err)
	}
	h := http.Header{"Authorization": {"Bearer k"}, "Idempotency-Key": {"k-1"}}
	if reqBody != "" {
		h.Set("Content-Type", "application/json")
	}
	return Exchange{
		Method: method, URL: u, Header: h, Body: []byte(reqBody), Status: status,
		RespHeader: http.Header{"Content-Type": {"application/json"}}, RespBody: []byte(respBody),
	}
}

const (
	meBody = `{"id":"usr_1","phone":null,"created_at":"2026-01-02T03:04:05Z","identities":[],` +
		`"session":{"id":"ses_1","app":"wx","expires_at":"2026-01-03T03:04:05Z"}}`
	errBody = `{"error":{"code":"invalid_amount","message":"amount must be a JSON integer","request_id":"req_1","details":{"field":"amount"}}}`
	order   = `{"id":"ord_1","app":"wx","platform":"wechat","user_id":null,"out_trade_no":"MG1","description":"tea",` +
		`"amount":100,"currency":"CNY","status":"created","needs_review":false,"refunded_amount":0,` +
		`"expires_at":"2026-01-02T03:04:05Z","paid_at":null,"closed_at":null,"created_at":"2026-01-02T03:04:05Z",` +
		`"updated_at":"2026-01-02T03:04:05Z","pay_params":{"tradeNO":"1"}}`
)

// TestCheckAPI checks the API description check against exchanges that
// match the document and exchanges that do not.
func TestCheckAPI(t *testing.T) {
	for _, tc := range []struct {
		name string
		x    Exchange
		want string // "" matches; else a substring of the complaint
	}{
		{"valid response", exchange("GET", "/v1/me", "", 200, meBody), ""},
		{"documented error", exchange("GET", "/v1/me", "", 401, errBody), ""},
		{"order with pay params", exchange("POST", "/v1/apps/wx/orders", `{"openid":"o1","amount":100,"description":"tea"}`, 201, order), ""},
		{"not a /v1 route", exchange("GET", "/healthz", "", 200, `{}`), ""},
		{"route neither has", exchange("GET", "/v1/nothing", "", 404, errBody), ""},
		{"bad request refused", exchange("POST", "/v1/apps/wx/orders", `{"openid":"o1","amount":"100","description":"tea"}`, 400, errBody), ""},
		{"missing field", exchange("GET", "/v1/me", "", 200, strings.Replace(meBody, `"phone":null,`, "", 1)), "not what the document says"},
		{"undocumented field", exchange("GET", "/v1/me", "", 200, strings.Replace(meBody, `"phone":null,`, `"phone":null,"session_key":"x",`, 1)), "session_key"},
		{"wrong type", exchange("POST", "/v1/apps/wx/orders", `{"openid":"o1","amount":100,"description":"tea"}`, 201, strings.Replace(order, `"amount":100`, `"amount":"1.00"`, 1)), "$.amount"},
		{"error without request_id", exchange("GET", "/v1/me", "", 401, strings.Replace(errBody, `"request_id":"req_1",`, "", 1)), "request_id"},
		{"undocumented route served", exchange("GET", "/v1/nothing", "", 200, `{}`), "add GET to its paths"},
		{"bad request accepted", exchange("POST", "/v1/apps/wx/orders", `{"openid":"o1","amount":"100","description":"tea"}`, 201, order), "yet minigate accepted it"},
		{"unknown field accepted", exchange("POST", "/v1/apps/wx/orders", `{"openid":"o1","amount":100,"description":"tea","tip":1}`, 201, order), "yet minigate accepted it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckAPI(tc.x)
			switch {
			case tc.want == "" && got != "":
				t.Fatalf("CheckAPI complains about a matching exchange:\n%s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Fatalf("CheckAPI = %q, want a complaint containing %q", got, tc.want)
			}
		})
	}
}

// TestCheckAPIConcurrently checks the shared validator from several
// goroutines at once, as concurrent requests to an instance do (run with
// -race).
func TestCheckAPIConcurrently(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 8 {
				x := exchange("GET", "/v1/me", "", 200, meBody)
				if i%2 == 1 {
					x = exchange("POST", "/v1/apps/wx/orders", `{"openid":"o1","amount":100,"description":"tea"}`, 201, order)
				}
				if msg := CheckAPI(x); msg != "" {
					errs <- msg
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
}
