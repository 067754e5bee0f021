package wechat

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/minigate/minigate/adapters"
)

func TestMiniprogramReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code int64
		want adapters.Reason
	}{
		{40029, adapters.ReasonInvalidCode},
		{40163, adapters.ReasonInvalidCode},
		{45011, adapters.ReasonRateLimited},
		{40226, adapters.ReasonHighRisk},
		{-1, adapters.ReasonBusy},
		{40001, adapters.ReasonInvalidToken},
		{40014, adapters.ReasonInvalidToken},
		{42001, adapters.ReasonInvalidToken},
		{40013, adapters.ReasonAuth},
		{40125, adapters.ReasonAuth},
		{40003, adapters.ReasonInvalidOpenID},
		{45015, adapters.ReasonWindowClosed},
		{45047, adapters.ReasonQuotaExceeded},
		{40007, adapters.ReasonNotFound},
		{47001, adapters.ReasonInvalidRequest},
		{61234, adapters.ReasonRejected},
	}
	for _, tt := range tests {
		if got := miniprogramReason(tt.code); got != tt.want {
			t.Errorf("errcode %d: reason %s, want %s", tt.code, got, tt.want)
		}
	}
}

func TestMiniprogramError(t *testing.T) {
	t.Parallel()
	const secretURL = "https://api.weixin.qq.com/sns/jscode2session?appid=wx1&secret=s3cr3t&js_code=c0de"
	refused := &url.Error{Op: "Get", URL: secretURL, Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name   string
		code   int64
		msg    string
		err    error
		reason adapters.Reason
		check  func(*adapters.PlatformError) bool
	}{
		{"errcode wins", 40029, "invalid code rid: 1", errors.New("Code2Session error : errcode=40029"), adapters.ReasonInvalidCode,
			func(pe *adapters.PlatformError) bool {
				return pe.Code == "40029" && pe.Message == "invalid code rid: 1" && pe.Err == nil
			}},
		{"connection refused", 0, "", refused, adapters.ReasonUnreachable,
			func(pe *adapters.PlatformError) bool { return errors.Is(pe, syscall.ECONNREFUSED) }},
		{"deadline", 0, "", &url.Error{Op: "Get", URL: secretURL, Err: context.DeadlineExceeded}, adapters.ReasonTimeout,
			func(pe *adapters.PlatformError) bool { return errors.Is(pe, context.DeadlineExceeded) }},
		{"bad status", 0, "", errors.New("http get error : uri=" + secretURL + " , statusCode=502"), adapters.ReasonBadResponse,
			func(pe *adapters.PlatformError) bool { return pe.Err == nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := miniprogramError("jscode2session", tt.code, tt.msg, tt.err)
			pe, ok := adapters.AsPlatformError(err)
			if !ok || pe.Reason != tt.reason || pe.Platform != "wechat" || pe.API != "jscode2session" || !tt.check(pe) {
				t.Fatalf("err = %#v", err)
			}
			if s := err.Error(); strings.Contains(s, "s3cr3t") || strings.Contains(s, "c0de") {
				t.Fatalf("error leaks the query: %s", s)
			}
		})
	}
	if err := miniprogramError("jscode2session", 0, "", nil); err != nil {
		t.Fatalf("success: %v", err)
	}
}

func TestRewriteMiniprogramURI(t *testing.T) {
	t.Parallel()
	rw := rewriteMiniprogramURI("http://127.0.0.1:8080/sandbox/wechat")
	tests := []struct{ in, want string }{
		{"https://api.weixin.qq.com/sns/jscode2session?appid=a", "http://127.0.0.1:8080/sandbox/wechat/sns/jscode2session?appid=a"},
		{"https://api.weixin.qq.com/cgi-bin/stable_token", "http://127.0.0.1:8080/sandbox/wechat/cgi-bin/stable_token"},
		{"https://api.weixin.qq.com", "http://127.0.0.1:8080/sandbox/wechat"},
		{"https://api.weixin.qq.com.evil.example/x", "https://api.weixin.qq.com.evil.example/x"},
		{"https://qyapi.weixin.qq.com/cgi-bin/gettoken", "https://qyapi.weixin.qq.com/cgi-bin/gettoken"},
		{"http://api.weixin.qq.com/x", "http://api.weixin.qq.com/x"},
	}
	for _, tt := range tests {
		if got := rw(tt.in); got != tt.want {
			t.Errorf("rewrite(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
