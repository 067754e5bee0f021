// Package sessions logs mini-program users in and keeps their sessions:
// users and platform identities in Postgres (merged by unionid within a
// union scope), session tokens stored only as hashes, and the latest
// session_key encrypted at rest for decrypting user data later.
package sessions

import "context"

// Login is what a platform says about the user who presented a login code.
type Login struct {
	// OpenID identifies the user within the app. For Alipay it is the
	// open_id when the platform returns one, else the user_id.
	OpenID string
	// UnionID identifies the user across the platform account's apps
	// (WeChat/QQ), when the platform returns it.
	UnionID string
	// SessionKey decrypts user data (WeChat/QQ); never leaves minigate.
	SessionKey string
	// AlipayUserID is Alipay's user_id (2088…), when returned.
	AlipayUserID string
}

// Authenticator exchanges a login code for the user's identity
// (WeChat/QQ jscode2session, Alipay alipay.system.oauth.token). Platform
// failures are *adapters.PlatformError with Reason invalid_code,
// rate_limited, high_risk_user, platform_busy, platform_unreachable or
// platform_timeout.
type Authenticator interface {
	Code2Session(ctx context.Context, code string) (Login, error)
}

// Phone is a verified phone number.
type Phone struct {
	PhoneNumber     string `json:"phone_number"`      // with country code for foreign numbers
	PurePhoneNumber string `json:"pure_phone_number"` // without country code
	CountryCode     string `json:"country_code"`
}

// PhoneNumberer resolves a getPhoneNumber code (WeChat
// getuserphonenumber). Platforms without it return *adapters.UnsupportedError.
type PhoneNumberer interface {
	PhoneNumber(ctx context.Context, code string) (Phone, error)
}
