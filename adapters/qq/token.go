package qq

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/accesstoken"
	"github.com/minigate/minigate/internal/config"
)

// tokenFetcher gets access tokens from QQ's getToken API.
type tokenFetcher struct {
	appID  string
	secret string
	base   string
	http   *http.Client
	now    func() time.Time
}

// NewTokenFetcher returns the accesstoken.Fetcher for app: GET
// /api/getToken?grant_type=client_credential&appid&secret. QQ has no
// stable-token API, so every fetch mints a new token (the previous one stays
// valid for five more minutes at QQ) and force changes nothing.
func NewTokenFetcher(app *config.App, opts adapters.Options) accesstoken.Fetcher {
	return &tokenFetcher{
		appID:  app.AppID,
		secret: app.AppSecret,
		base:   endpoint(opts.Endpoints.QQAPI, config.DefaultQQAPI),
		http:   newHTTPClient(opts.Timeout),
		now:    opts.Clock(),
	}
}

// FetchAccessToken implements accesstoken.Fetcher.
func (f *tokenFetcher) FetchAccessToken(ctx context.Context, _ bool) (tok accesstoken.Token, err error) {
	const api = "getToken"
	start := time.Now()
	defer func() { adapters.Observe(PlatformQQ, api, start, err) }()
	q := url.Values{
		"grant_type": {"client_credential"},
		"appid":      {f.appID},
		"secret":     {f.secret},
	}
	var out struct {
		apiStatus
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	issued := f.now()
	if err := getJSON(ctx, f.http, api, f.base+"/api/getToken?"+q.Encode(), &out); err != nil {
		return accesstoken.Token{}, err
	}
	if out.ErrCode != 0 {
		return accesstoken.Token{}, out.platformError(api)
	}
	if out.AccessToken == "" || out.ExpiresIn <= 0 {
		return accesstoken.Token{}, &adapters.PlatformError{Platform: PlatformQQ, API: api,
			Reason: adapters.ReasonBadResponse, Message: "response without access_token or expires_in"}
	}
	// The lifetime counts from before the request, so the token is never
	// believed valid for longer than QQ granted it.
	return accesstoken.Token{Value: out.AccessToken, ExpiresAt: issued.Add(time.Duration(out.ExpiresIn) * time.Second)}, nil
}
