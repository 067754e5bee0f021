package sessions

import (
	"context"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/ids"
)

// Link and unlink errors.
var (
	errIdentityInUse = apperr.New(apperr.Conflict, "identity_in_use",
		"this identity belongs to another user; minigate never moves an identity (its orders and conversations belong to that user)")
	errAppAlreadyLinked = apperr.New(apperr.Conflict, "app_already_linked",
		"the user already has another identity in this app; unlink it first")
	errIdentityNotFound = apperr.New(apperr.NotFound, "identity_not_found", "the current user has no such identity")
	errLastIdentity     = apperr.New(apperr.Conflict, "last_identity", "a user keeps at least one identity; this is the last one")
	errCurrentIdentity  = apperr.New(apperr.Conflict, "current_identity",
		"this session logged in with this identity; unlink it from a session of another identity")
)

// Queries of links and unlinks.
const (
	IdentityDelete = `DELETE FROM identities WHERE id = $1`

	SessionDeleteByIdentity = `DELETE FROM sessions WHERE identity_id = $1`
)

// LinkResult is the answer to a link: the user, and whether the identity
// was linked now (false: it already was this user's).
type LinkResult struct {
	User   *User
	Linked bool
}

// Link logs in on app appID with code (a login code of that app's
// platform: wx.login, qq.login or my.getAuthCode) and links the identity
// behind it to the principal's user. An identity of another user is
// refused (identity_in_use), never moved; one the user already has is
// answered as is (Linked false). A user has at most one identity per app
// (app_already_linked). A linked identity's later logins land on this user.
//
// Links lock the user row, then the identity's login lock: concurrent links
// of one identity by two users, or a link racing the identity's first
// login, are serialized, and exactly one of them gets it.
func (s *Service) Link(ctx context.Context, p auth.Principal, appID, code string) (*LinkResult, error) {
	a, err := s.app(appID)
	if err != nil {
		return nil, err
	}
	if err := checkCode(code); err != nil {
		return nil, err
	}
	login, err := a.Login.Code2Session(ctx, code)
	if err != nil {
		return nil, adapters.ToAppError(fmt.Errorf("sessions: link: code2session: %w", err))
	}
	if login.OpenID == "" {
		return nil, apperr.New(apperr.Unavailable, "platform_bad_response", "the platform returned no user identity")
	}
	now := s.clock()
	n := newIdentity{
		App: a.ID, Platform: a.Platform, OpenID: login.OpenID, UnionID: login.UnionID, UnionScope: a.UnionScope,
		AlipayUserID: login.AlipayUserID, UserID: p.UserID, At: now, Source: IdentitySourceLink,
	}
	if login.SessionKey != "" {
		n.SessionKeySealed = s.sealer.seal(login.SessionKey, a.ID, login.OpenID)
	}
	res := &LinkResult{}
	err = db.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		if _, err := lockActiveUser(ctx, tx, p.UserID); err != nil {
			return err
		}
		if err := lockKeys(ctx, tx, []string{identityLockKey(a.ID, login.OpenID)}); err != nil {
			return err
		}
		existing, err := getIdentityByAppOpenID(ctx, tx, a.ID, login.OpenID)
		switch {
		case err == nil && existing.UserID != p.UserID:
			return errIdentityInUse
		case err == nil:
			// Already this user's: the login refreshes its session key.
			_, err = updateIdentityLogin(ctx, tx, existing.ID, n)
			return err
		case !errors.Is(err, ErrNotFound):
			return err
		}
		mine, err := listIdentitiesByUser(ctx, tx, p.UserID)
		if err != nil {
			return err
		}
		for _, i := range mine {
			if i.App == a.ID {
				return errAppAlreadyLinked.WithDetail("identity_id", i.PublicID)
			}
		}
		if _, err := insertIdentity(ctx, tx, n); err != nil {
			return err
		}
		res.Linked = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.Linked {
		s.log.InfoContext(ctx, "identity linked", "app", a.ID, "user_id", p.UserID)
	}
	if res.User, err = s.GetUser(ctx, p.UserID); err != nil {
		return nil, err
	}
	return res, nil
}

// Unlink removes identity identityID (idn_…) from the principal's user and
// deletes that identity's session tokens. The identity's next login
// creates a new user (or joins one by unionid, like any first login);
// orders it paid stay with this user. The last identity, and the one the
// request's session logged in with, cannot be unlinked.
func (s *Service) Unlink(ctx context.Context, p auth.Principal, identityID string) (*User, error) {
	if !ids.Valid(identityIDPrefix, identityID) {
		return nil, errIdentityNotFound
	}
	var unlinked *identityRow
	err := db.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		if _, err := lockActiveUser(ctx, tx, p.UserID); err != nil {
			return err
		}
		mine, err := listIdentitiesByUser(ctx, tx, p.UserID)
		if err != nil {
			return err
		}
		for i := range mine {
			if mine[i].PublicID == identityID {
				unlinked = &mine[i]
			}
		}
		switch {
		case unlinked == nil:
			return errIdentityNotFound
		case len(mine) == 1:
			return errLastIdentity
		}
		sess, err := getSession(ctx, tx, p.SessionID)
		if err != nil {
			return err
		}
		if sess.IdentityID == unlinked.ID {
			return errCurrentIdentity
		}
		if err := lockKeys(ctx, tx, []string{identityLockKey(unlinked.App, unlinked.OpenID)}); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, SessionDeleteByIdentity, unlinked.ID); err != nil {
			return fmt.Errorf("sessions: unlink: delete sessions: %w", err)
		}
		if _, err := tx.ExecContext(ctx, IdentityDelete, unlinked.ID); err != nil {
			return fmt.Errorf("sessions: unlink: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "identity unlinked", "app", unlinked.App, "user_id", p.UserID)
	return s.GetUser(ctx, p.UserID)
}
