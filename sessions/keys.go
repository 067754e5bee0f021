package sessions

import (
	"context"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
)

// KeyReader hands adapters the session_key of a user's latest login
// (adapters.SessionKeys), for platform calls signed with it: WeChat virtual
// payment's signature. It opens the sealed key stored at login; the key
// goes to the adapter that signs with it and nowhere else.
type KeyReader struct {
	db     sqlx.ExtContext
	sealer *sealer
}

var _ adapters.SessionKeys = (*KeyReader)(nil)

// NewKeyReader returns a reader of the keys sealed under secretKey (config
// secret_key) in pool.
func NewKeyReader(pool sqlx.ExtContext, secretKey string) (*KeyReader, error) {
	sl, err := newSealer(secretKey)
	if err != nil {
		return nil, err
	}
	return &KeyReader{db: pool, sealer: sl}, nil
}

// SessionKey implements adapters.SessionKeys: the session_key of openID's
// latest login to app. An unknown identity, one without a stored key and a
// key that does not open (secret_key changed) wrap adapters.ErrNoSessionKey.
func (r *KeyReader) SessionKey(ctx context.Context, app, openID string) (string, error) {
	ident, err := getIdentityByAppOpenID(ctx, r.db, app, openID)
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("sessions: session key: no identity: %w", adapters.ErrNoSessionKey)
	}
	if err != nil {
		return "", fmt.Errorf("sessions: session key: %w", err)
	}
	if ident.SessionKeySealed == nil {
		return "", fmt.Errorf("sessions: session key: none stored: %w", adapters.ErrNoSessionKey)
	}
	key, err := r.sealer.open(ident.SessionKeySealed, ident.App, ident.OpenID)
	if err != nil {
		return "", fmt.Errorf("sessions: session key: %w: %w", adapters.ErrNoSessionKey, err)
	}
	return key, nil
}
