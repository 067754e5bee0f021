package sessions

import (
	"context"
	"errors"
)

// AppIdentity is a user's identity in one app as other domains need it
// (orders resolves payers and order owners with it): no session key.
type AppIdentity struct {
	UserID       string
	OpenID       string
	AlipayUserID string
}

// IdentityOfUser returns the identity user userID has in app; ok is false
// when the user has none there.
func (s *Service) IdentityOfUser(ctx context.Context, app, userID string) (AppIdentity, bool, error) {
	rows, err := listIdentitiesByUser(ctx, s.db, userID)
	if err != nil {
		return AppIdentity{}, false, err
	}
	for _, r := range rows {
		if r.App == app {
			return appIdentity(&r), true, nil
		}
	}
	return AppIdentity{}, false, nil
}

// IdentityByOpenID returns the identity with openid openID in app; ok is
// false when no user of the app has it.
func (s *Service) IdentityByOpenID(ctx context.Context, app, openID string) (AppIdentity, bool, error) {
	r, err := getIdentityByAppOpenID(ctx, s.db, app, openID)
	if errors.Is(err, ErrNotFound) {
		return AppIdentity{}, false, nil
	}
	if err != nil {
		return AppIdentity{}, false, err
	}
	return appIdentity(r), true, nil
}

func appIdentity(r *identityRow) AppIdentity {
	return AppIdentity{UserID: r.UserID, OpenID: r.OpenID, AlipayUserID: r.AlipayUserID.String}
}
