// Package auth authenticates API callers. Two kinds of bearer credentials
// exist: API keys from the config (business backends and operators) and
// session tokens that mini-programs got from POST /v1/apps/{app}/sessions.
// Handlers declare which they accept with Operator, User or Any, and read the
// caller with FromCtx.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/config"
)

// Kind says what authenticated a request.
type Kind int

// Principal kinds.
const (
	KindNone     Kind = iota
	KindOperator      // an API key from the config
	KindUser          // a mini-program session token
)

// Principal is the authenticated caller.
type Principal struct {
	Kind Kind
	// KeyName is the API key's name (operators).
	KeyName string
	// UserID, SessionID and App identify a mini-program session (users).
	UserID    string
	SessionID string
	App       string
}

// SessionResolver turns a session token into its principal; it returns an
// error wrapping ErrUnauthenticated for unknown, expired or revoked tokens.
type SessionResolver interface {
	ResolveSession(ctx context.Context, token string) (Principal, error)
}

// ErrUnauthenticated is returned for missing or invalid credentials.
var ErrUnauthenticated = apperr.New(apperr.Unauthenticated, "unauthenticated", "missing or invalid credentials")

// ErrForbidden is returned when the caller may not use the route.
var ErrForbidden = apperr.New(apperr.Forbidden, "forbidden", "these credentials may not use this route")

const principalLocal = "principal"

// Authenticator checks bearer credentials.
type Authenticator struct {
	keys     []apiKey
	sessions SessionResolver
}

type apiKey struct {
	name string
	hash [32]byte
}

// New returns an Authenticator for the configured API keys and sessions.
func New(keys []config.APIKey, sessions SessionResolver) *Authenticator {
	a := &Authenticator{sessions: sessions}
	for _, k := range keys {
		a.keys = append(a.keys, apiKey{name: k.Name, hash: sha256.Sum256([]byte(k.Key))})
	}
	return a
}

// Operator accepts API keys only.
func (a *Authenticator) Operator() fiber.Handler { return a.require(KindOperator) }

// User accepts session tokens only.
func (a *Authenticator) User() fiber.Handler { return a.require(KindUser) }

// Any accepts API keys and session tokens.
func (a *Authenticator) Any() fiber.Handler { return a.require(KindNone) }

func (a *Authenticator) require(want Kind) fiber.Handler {
	return func(c *fiber.Ctx) error {
		p, err := a.authenticate(c)
		if err != nil {
			return err
		}
		if want != KindNone && p.Kind != want {
			return ErrForbidden
		}
		c.Locals(principalLocal, p)
		return c.Next()
	}
}

func (a *Authenticator) authenticate(c *fiber.Ctx) (Principal, error) {
	h := c.Get(fiber.HeaderAuthorization)
	token, ok := strings.CutPrefix(h, "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		return Principal{}, ErrUnauthenticated
	}
	// Compare hashes in constant time against every key.
	sum := sha256.Sum256([]byte(token))
	var match *apiKey
	for i := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], a.keys[i].hash[:]) == 1 {
			match = &a.keys[i]
		}
	}
	if match != nil {
		return Principal{Kind: KindOperator, KeyName: match.name}, nil
	}
	if a.sessions == nil {
		return Principal{}, ErrUnauthenticated
	}
	p, err := a.sessions.ResolveSession(c.UserContext(), token)
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			return Principal{}, ErrUnauthenticated
		}
		return Principal{}, err
	}
	p.Kind = KindUser
	return p, nil
}

// FromCtx returns the request's principal (zero when unauthenticated).
func FromCtx(c *fiber.Ctx) Principal {
	p, _ := c.Locals(principalLocal).(Principal)
	return p
}
