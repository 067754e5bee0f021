package sessions

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/ids"
)

// TypeUserDeleted is the event published when a user is erased; its data
// is a Deletion.
const TypeUserDeleted = "user.deleted"

// Erasure is what an Eraser is told about a user being erased, inside the
// erasure's transaction: the user and every identity it has (and had, as a
// payer), and how to pseudonymise a platform id.
type Erasure struct {
	UserID     string
	Identities []ErasedIdentity
	At         time.Time
	// Pseudonym maps a platform user id (openid, Alipay user id) of app to
	// its pseudonym: "erased_" and 32 hex digits, the same for the same
	// app and id (so an erased payer's orders still group together) and
	// not reversible without secret_key.
	Pseudonym func(app, id string) string
}

// ErasedIdentity is one identity of an erased user.
type ErasedIdentity struct {
	App, Platform, OpenID, AlipayUserID string
}

// Eraser erases or pseudonymises what another domain keeps about a user
// being erased (orders: payer references; customer service: the inbox;
// callbacks and events: their copies), in the erasure's transaction tx.
type Eraser func(ctx context.Context, tx *sqlx.Tx, e *Erasure) error

// Deletion is the answer to an erasure and the data of user.deleted.
type Deletion struct {
	ID        string    `json:"id"`
	Deleted   bool      `json:"deleted"`
	DeletedAt time.Time `json:"deleted_at"`
	DeletedBy string    `json:"deleted_by"`
}

// Queries of the erasure.
const (
	SessionDeleteByUser = `DELETE FROM sessions WHERE user_id = $1`

	IdentityDeleteByUser = `DELETE FROM identities WHERE user_id = $1`

	UnionIDDeleteByUser = `DELETE FROM user_unionids WHERE user_id = $1`

	// ExternalIDEraseByUser deletes the user's external ids and keeps
	// their keyed hashes ($2: the hashes in the order of $3, the ids), so
	// an import does not bring the user back.
	ExternalIDEraseByUser = `WITH gone AS (
	  DELETE FROM user_external_ids WHERE user_id = $1 RETURNING source, external_id)
	INSERT INTO erased_external_ids (source, external_id_hash, erased_at)
	SELECT g.source, h.hash, $4 FROM gone g
	JOIN unnest($2::bytea[], $3::text[]) AS h (hash, key) ON h.key = g.source || E'\n' || g.external_id
	ON CONFLICT DO NOTHING`

	ExternalIDListByUser = `SELECT source, external_id FROM user_external_ids WHERE user_id = $1`

	// UserErase clears a user's personal fields and marks it erased.
	UserErase = `UPDATE users SET phone_number = NULL, pure_phone_number = NULL, phone_country_code = NULL,
	phone_verified_at = NULL, metadata = '{}', deleted_at = $2, deleted_by = $3, updated_at = $2
	WHERE id = $1`
)

// AddEraser registers an Eraser that DeleteUser runs in the erasure's
// transaction. Call it while wiring, before serving.
func (s *Service) AddEraser(e Eraser) { s.erasers = append(s.erasers, e) }

// pseudonym is Erasure.Pseudonym: HMAC-SHA256 under a key derived from
// secret_key (purpose "minigate pseudonym v1") of the app and the id.
func (s *Service) pseudonym(app, id string) string {
	m := hmac.New(sha256.New, s.pseudonymKey)
	m.Write([]byte(app + "\n" + id))
	return "erased_" + hex.EncodeToString(m.Sum(nil)[:16])
}

// erasedExternalIDHash is the keyed hash erased_external_ids keeps of an
// external id (purpose "minigate erased external id v1").
func erasedExternalIDHash(key []byte, source, externalID string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(source + "\n" + externalID))
	return m.Sum(nil)
}

// Key purposes (HKDF info) of the keys derived from secret_key here.
const (
	purposePseudonym        = "minigate pseudonym v1"
	purposeErasedExternalID = "minigate erased external id v1"
)

func deriveKey(secret, purpose string) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, []byte(secret), nil, purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("sessions: derive %s key: %w", purpose, err)
	}
	return k, nil
}

// DeleteUser erases user id's personal data, by the API key named actor:
// its identities (with their session keys), session tokens, unionids,
// phone number, metadata and external ids, and — through the registered
// Erasers — its inbox and the copies of it, while orders and refunds stay
// for accounting with the payer pseudonymised. The user row stays, marked
// erased, so orders still name it; user.deleted is published. Everything
// happens in one transaction. A later login of any of its identities
// creates a fresh user. Erasing an erased user again answers the first
// erasure and changes nothing.
//
// The erasure locks the user row (like links and unlinks), then the login
// locks of its identities and unionids, so a concurrent login either
// finishes first (and its session is erased) or comes after (and creates a
// fresh user).
func (s *Service) DeleteUser(ctx context.Context, id, actor string) (*Deletion, error) {
	if !ids.Valid("usr", id) {
		return nil, errUserNotFound
	}
	now := s.clock()
	var out *Deletion
	err := db.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		u, err := lockActiveUser(ctx, tx, id)
		if u != nil && u.DeletedAt.Valid {
			out = &Deletion{ID: id, Deleted: true, DeletedAt: u.DeletedAt.Time, DeletedBy: u.DeletedBy.String}
			return nil
		}
		if err != nil {
			return err
		}
		idents, err := listIdentitiesByUser(ctx, tx, id)
		if err != nil {
			return err
		}
		var unions []UnionIDView
		if err := sqlx.SelectContext(ctx, tx, &unions, `SELECT union_scope, unionid FROM user_unionids WHERE user_id = $1`, id); err != nil {
			return fmt.Errorf("sessions: erase: %w", err)
		}
		var keys []string
		for _, i := range idents {
			keys = append(keys, identityLockKey(i.App, i.OpenID))
			if i.UnionID.Valid && i.UnionScope.Valid {
				keys = append(keys, unionLockKey(i.UnionScope.String, i.UnionID.String))
			}
		}
		for _, u := range unions {
			keys = append(keys, unionLockKey(u.UnionScope, u.UnionID))
		}
		if err := lockKeys(ctx, tx, keys); err != nil {
			return err
		}
		// Links and unlinks wait for the user lock, so the identities
		// cannot have changed; logins only touch their rows.
		e := &Erasure{UserID: id, At: now, Pseudonym: s.pseudonym}
		for _, i := range idents {
			e.Identities = append(e.Identities, ErasedIdentity{App: i.App, Platform: i.Platform, OpenID: i.OpenID, AlipayUserID: i.AlipayUserID.String})
		}
		for _, erase := range s.erasers {
			if err := erase(ctx, tx, e); err != nil {
				return err
			}
		}
		if err := s.eraseOwn(ctx, tx, id, actor, now); err != nil {
			return err
		}
		out = &Deletion{ID: id, Deleted: true, DeletedAt: now, DeletedBy: actor}
		// The erasure belongs in the audit log (issue 13) here, in this
		// transaction: actor, action "user.delete", subject id.
		if s.publish != nil {
			if err := s.publish(ctx, tx, TypeUserDeleted, out); err != nil {
				return fmt.Errorf("sessions: erase: publish: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "user erased", "user_id", id, "actor", actor)
	return out, nil
}

// eraseOwn erases what sessions keeps: session tokens, identities (with
// their session keys), unionids, external ids (keeping keyed hashes) and
// the user's personal fields.
func (s *Service) eraseOwn(ctx context.Context, tx *sqlx.Tx, id, actor string, now time.Time) error {
	for _, q := range []string{SessionDeleteByUser, IdentityDeleteByUser, UnionIDDeleteByUser} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("sessions: erase: %w", err)
		}
	}
	var exts []struct {
		Source     string `db:"source"`
		ExternalID string `db:"external_id"`
	}
	if err := sqlx.SelectContext(ctx, tx, &exts, ExternalIDListByUser, id); err != nil {
		return fmt.Errorf("sessions: erase: %w", err)
	}
	hashes, names := make([][]byte, 0, len(exts)), make([]string, 0, len(exts))
	for _, x := range exts {
		hashes = append(hashes, erasedExternalIDHash(s.erasedKey, x.Source, x.ExternalID))
		names = append(names, x.Source+"\n"+x.ExternalID)
	}
	if _, err := tx.ExecContext(ctx, ExternalIDEraseByUser, id, pq.Array(hashes), pq.Array(names), now); err != nil {
		return fmt.Errorf("sessions: erase external ids: %w", err)
	}
	if _, err := tx.ExecContext(ctx, UserErase, id, now, actor); err != nil {
		return fmt.Errorf("sessions: erase user: %w", err)
	}
	return nil
}
