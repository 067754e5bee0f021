// Package accesstoken keeps platform access tokens (WeChat stable token, QQ
// getToken) in Postgres, sealed at rest with a key derived from secret_key
// (internal/seal), shared by every minigate instance: a token is
// refreshed before it expires by exactly one instance at a time, and
// refreshed once more when the platform says it is invalid.
package accesstoken

import (
	"context"
	"time"
)

// Token is an access token and when it expires.
type Token struct {
	Value     string
	ExpiresAt time.Time
}

// Fetcher gets a new token from the platform. force asks for a new token
// even when the platform would hand back the current one (WeChat
// stable_token force_refresh); it is set only after the platform rejected
// the current token.
type Fetcher interface {
	FetchAccessToken(ctx context.Context, force bool) (Token, error)
}
