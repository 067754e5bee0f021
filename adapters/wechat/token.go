package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/accesstoken"
	"github.com/minigate/minigate/internal/config"
)

// maxStableTokenAnswer bounds the stable_token answer read into memory.
const maxStableTokenAnswer = 64 << 10

// stableTokenFetcher gets WeChat stable access tokens (POST
// /cgi-bin/stable_token). It talks HTTP itself, at the configured endpoint,
// so it does not depend on silenceper's process-wide hooks.
type stableTokenFetcher struct {
	appID  string
	secret string
	url    string
	client *http.Client
	now    func() time.Time
}

// NewTokenFetcher returns the accesstoken.Fetcher for app's stable access
// token, reached at opts.Endpoints.WeChatAPI. force asks WeChat for a new
// token (force_refresh), which invalidates the previous one at once.
func NewTokenFetcher(app *config.App, opts adapters.Options) accesstoken.Fetcher {
	base := strings.TrimRight(opts.Endpoints.WeChatAPI, "/")
	if base == "" {
		base = config.DefaultWeChatAPI
	}
	return &stableTokenFetcher{
		appID: app.AppID, secret: app.AppSecret,
		url:    base + "/cgi-bin/stable_token",
		client: &http.Client{Timeout: miniprogramTimeout(opts)},
		now:    opts.Clock(),
	}
}

type stableTokenRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

type stableTokenAnswer struct {
	ErrCode     int64  `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// FetchAccessToken implements accesstoken.Fetcher.
func (f *stableTokenFetcher) FetchAccessToken(ctx context.Context, force bool) (accesstoken.Token, error) {
	start := time.Now()
	tok, err := f.fetch(ctx, force)
	adapters.Observe(miniprogramPlatform, apiStableToken, start, err)
	if err != nil {
		return accesstoken.Token{}, fmt.Errorf("wechat: stable token: %w", err)
	}
	return tok, nil
}

func (f *stableTokenFetcher) fetch(ctx context.Context, force bool) (accesstoken.Token, error) {
	body, err := json.Marshal(stableTokenRequest{GrantType: "client_credential", AppID: f.appID, Secret: f.secret, ForceRefresh: force})
	if err != nil {
		return accesstoken.Token{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return accesstoken.Token{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return accesstoken.Token{}, adapters.TransportError(miniprogramPlatform, apiStableToken, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxStableTokenAnswer))
	if err != nil {
		return accesstoken.Token{}, adapters.TransportError(miniprogramPlatform, apiStableToken, err)
	}
	bad := func(msg string) error {
		return &adapters.PlatformError{Platform: miniprogramPlatform, API: apiStableToken,
			Reason: adapters.ReasonBadResponse, HTTPStatus: resp.StatusCode, Message: msg}
	}
	if resp.StatusCode != http.StatusOK {
		return accesstoken.Token{}, bad("HTTP status " + strconv.Itoa(resp.StatusCode))
	}
	var ans stableTokenAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return accesstoken.Token{}, bad("answer is not JSON")
	}
	if ans.ErrCode != 0 {
		reason := miniprogramReason(ans.ErrCode)
		if reason == adapters.ReasonInvalidToken {
			// From the token endpoint itself, "invalid credential" means our
			// secret is wrong: refreshing again would not help.
			reason = adapters.ReasonAuth
		}
		return accesstoken.Token{}, &adapters.PlatformError{
			Platform: miniprogramPlatform, API: apiStableToken, Reason: reason,
			HTTPStatus: resp.StatusCode, Code: strconv.FormatInt(ans.ErrCode, 10), Message: ans.ErrMsg,
		}
	}
	if ans.AccessToken == "" || ans.ExpiresIn <= 0 {
		return accesstoken.Token{}, bad("no access_token or expires_in in the answer")
	}
	return accesstoken.Token{Value: ans.AccessToken, ExpiresAt: f.now().Add(time.Duration(ans.ExpiresIn) * time.Second)}, nil
}
