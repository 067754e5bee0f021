package sessions

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/ids"
)

// User is a user as the users API shows it: identities (never session
// keys), the verified phone, the backend's metadata and the ids the user
// has in other systems.
type User struct {
	ID    string         `json:"id"`
	Phone *VerifiedPhone `json:"phone"`
	// Metadata is the backend's own JSON object (PATCH /v1/users/{id}).
	Metadata json.RawMessage `json:"metadata"`
	// ExternalIDs maps a source ("leancloud") to the user's id there.
	ExternalIDs map[string]string `json:"external_ids"`
	// UnionIDs are unionids given to the user without an identity that
	// carries them (LeanCloud's _weixin_unionid).
	UnionIDs   []UnionIDView  `json:"unionids"`
	Identities []IdentityView `json:"identities"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
}

// UnionIDView is a unionid known for a user within a union scope.
type UnionIDView struct {
	UnionScope string `json:"union_scope" db:"union_scope"`
	UnionID    string `json:"unionid" db:"unionid"`
}

// UserPage is one page of a lookup.
type UserPage struct {
	Data       []User `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Metadata bounds: a small object for the backend's own use, not a store.
const (
	MaxMetadataKeys   = 50
	MaxMetadataKeyLen = 40
	MaxMetadataBytes  = 8 << 10
)

// Lookup page sizes.
const (
	DefaultLookupLimit = 20
	MaxLookupLimit     = 100
)

// Users API errors.
var (
	errUserNotFound = apperr.New(apperr.NotFound, "user_not_found", "no such user")
	errUserDeleted  = apperr.New(apperr.NotFound, "user_deleted", "the user was deleted (its personal data erased)")
)

// Queries of the users API, named entity-first.
const (
	UserListByIDs = `SELECT ` + userColumns + ` FROM users WHERE id = ANY($1) ORDER BY id`

	// UserLockActive locks an active (not erased) user against links,
	// unlinks, metadata updates and erasure of the same user. FOR NO KEY
	// UPDATE does not block logins, whose inserts only check the key.
	UserLockActive = `SELECT ` + userColumns + ` FROM users WHERE id = $1 FOR NO KEY UPDATE`

	UserSetMetadata = `UPDATE users SET metadata = $2, updated_at = $3 WHERE id = $1`

	// UserIDsByOpenID, UserIDsByUnionID and UserIDsByPhone find active users
	// after the cursor $n (ids ascending).
	UserIDsByOpenID = `SELECT i.user_id FROM identities i
	WHERE i.app = $1 AND i.openid = $2 AND i.user_id > $3 ORDER BY i.user_id LIMIT $4`

	UserIDsByUnionID = `SELECT user_id FROM (
	  SELECT user_id FROM identities WHERE union_scope = $1 AND unionid = $2
	  UNION
	  SELECT user_id FROM user_unionids WHERE union_scope = $1 AND unionid = $2
	) AS m WHERE user_id > $3 ORDER BY user_id LIMIT $4`

	UserIDsByPhone = `SELECT id FROM users
	WHERE phone_lookup = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3`

	UserIDsByExternalID = `SELECT user_id FROM user_external_ids
	WHERE source = $1 AND external_id = $2 AND user_id > $3 ORDER BY user_id LIMIT $4`

	ExternalIDListByUsers = `SELECT user_id, source, external_id FROM user_external_ids WHERE user_id = ANY($1)`

	UnionIDListByUsers = `SELECT user_id, union_scope, unionid FROM user_unionids
	WHERE user_id = ANY($1) ORDER BY union_scope, unionid`
)

// GetUser returns user id with its identities; unknown ids are 404
// user_not_found, erased users 404 user_deleted.
func (s *Service) GetUser(ctx context.Context, id string) (*User, error) {
	if !ids.Valid("usr", id) {
		return nil, errUserNotFound
	}
	us, err := s.users(ctx, s.db, []string{id})
	if err != nil {
		return nil, err
	}
	if len(us) == 0 {
		row, err := getUser(ctx, s.db, id)
		switch {
		case errors.Is(err, ErrNotFound):
			return nil, errUserNotFound
		case err != nil:
			return nil, fmt.Errorf("sessions: get user: %w", err)
		}
		return nil, errUserDeleted.WithDetail("deleted_at", row.DeletedAt.Time)
	}
	return &us[0], nil
}

// users loads the active users among userIDs with their identities,
// unionids and external ids, in id order.
func (s *Service) users(ctx context.Context, ex sqlx.ExtContext, userIDs []string) ([]User, error) {
	if len(userIDs) == 0 {
		return []User{}, nil
	}
	var rows []userRow
	if err := sqlx.SelectContext(ctx, ex, &rows, UserListByIDs, pq.Array(userIDs)); err != nil {
		return nil, fmt.Errorf("sessions: list users: %w", err)
	}
	var idents []identityRow
	if err := sqlx.SelectContext(ctx, ex, &idents, IdentityListByUsers, pq.Array(userIDs)); err != nil {
		return nil, fmt.Errorf("sessions: list identities: %w", err)
	}
	var exts []struct {
		UserID     string `db:"user_id"`
		Source     string `db:"source"`
		ExternalID string `db:"external_id"`
	}
	if err := sqlx.SelectContext(ctx, ex, &exts, ExternalIDListByUsers, pq.Array(userIDs)); err != nil {
		return nil, fmt.Errorf("sessions: list external ids: %w", err)
	}
	var unions []struct {
		UserID     string `db:"user_id"`
		UnionScope string `db:"union_scope"`
		UnionID    string `db:"unionid"`
	}
	if err := sqlx.SelectContext(ctx, ex, &unions, UnionIDListByUsers, pq.Array(userIDs)); err != nil {
		return nil, fmt.Errorf("sessions: list unionids: %w", err)
	}
	out := make([]User, 0, len(rows))
	at := make(map[string]int, len(rows))
	for _, r := range rows {
		if r.DeletedAt.Valid {
			continue
		}
		at[r.ID] = len(out)
		meta := r.Metadata
		if len(meta) == 0 {
			meta = []byte("{}")
		}
		out = append(out, User{
			ID: r.ID, Phone: r.phone(), Metadata: meta, ExternalIDs: map[string]string{},
			UnionIDs: []UnionIDView{}, Identities: []IdentityView{}, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		})
	}
	for i := range idents {
		if k, ok := at[idents[i].UserID]; ok {
			out[k].Identities = append(out[k].Identities, identityView(&idents[i]))
		}
	}
	for _, e := range exts {
		if k, ok := at[e.UserID]; ok {
			out[k].ExternalIDs[e.Source] = e.ExternalID
		}
	}
	for _, u := range unions {
		if k, ok := at[u.UserID]; ok {
			out[k].UnionIDs = append(out[k].UnionIDs, UnionIDView{UnionScope: u.UnionScope, UnionID: u.UnionID})
		}
	}
	return out, nil
}

// LookupFilter selects users for GET /v1/users: exactly one of app +
// openid, union_scope + unionid, phone, or external_source + external_id.
type LookupFilter struct {
	App, OpenID                string
	UnionScope, UnionID        string
	Phone                      string
	ExternalSource, ExternalID string
	// Cursor is the last user id of the previous page; pages run in id
	// (creation) order.
	Cursor string
	Limit  int
}

func lookupInvalid(field, msg string) error {
	return apperr.New(apperr.Invalid, "invalid_"+field, msg).WithDetail("field", field)
}

// LookupUsers finds the active users that match f, a page at a time.
func (s *Service) LookupUsers(ctx context.Context, f LookupFilter) (*UserPage, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultLookupLimit
	}
	f.Limit = min(f.Limit, MaxLookupLimit)
	if f.Cursor != "" && !ids.Valid("usr", f.Cursor) {
		return nil, lookupInvalid("cursor", "cursor must be a user id from next_cursor")
	}
	kinds := 0
	for _, set := range []bool{f.App != "" || f.OpenID != "", f.UnionScope != "" || f.UnionID != "", f.Phone != "", f.ExternalSource != "" || f.ExternalID != ""} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return nil, apperr.New(apperr.Invalid, "invalid_lookup",
			"look users up by exactly one of: app and openid, union_scope and unionid, phone, external_source and external_id")
	}
	for _, v := range []struct{ name, value string }{
		{"app", f.App}, {"openid", f.OpenID}, {"union_scope", f.UnionScope}, {"unionid", f.UnionID},
		{"phone", f.Phone}, {"external_source", f.ExternalSource}, {"external_id", f.ExternalID},
	} {
		if len(v.value) > 256 || !utf8.ValidString(v.value) {
			return nil, lookupInvalid(v.name, v.name+" must be valid UTF-8 of at most 256 bytes")
		}
	}
	var (
		userIDs []string
		err     error
	)
	switch {
	case f.App != "" || f.OpenID != "":
		if f.App == "" || f.OpenID == "" {
			return nil, lookupInvalid("openid", "app and openid go together")
		}
		err = sqlx.SelectContext(ctx, s.db, &userIDs, UserIDsByOpenID, f.App, f.OpenID, f.Cursor, f.Limit)
	case f.UnionScope != "" || f.UnionID != "":
		if f.UnionScope == "" || f.UnionID == "" {
			return nil, lookupInvalid("unionid", "union_scope and unionid go together")
		}
		err = sqlx.SelectContext(ctx, s.db, &userIDs, UserIDsByUnionID, f.UnionScope, f.UnionID, f.Cursor, f.Limit)
	case f.Phone != "":
		p, ok := NormalizePhone(f.Phone)
		if !ok {
			return nil, lookupInvalid("phone", "phone must be a phone number: digits, optionally after + and a country code")
		}
		err = sqlx.SelectContext(ctx, s.db, &userIDs, UserIDsByPhone, p, f.Cursor, f.Limit)
	default:
		if f.ExternalSource == "" || f.ExternalID == "" {
			return nil, lookupInvalid("external_id", "external_source and external_id go together")
		}
		err = sqlx.SelectContext(ctx, s.db, &userIDs, UserIDsByExternalID, f.ExternalSource, f.ExternalID, f.Cursor, f.Limit)
	}
	if err != nil {
		return nil, fmt.Errorf("sessions: lookup users: %w", err)
	}
	us, err := s.users(ctx, s.db, userIDs)
	if err != nil {
		return nil, err
	}
	p := &UserPage{Data: us}
	if len(userIDs) == f.Limit {
		p.NextCursor = userIDs[len(userIDs)-1]
	}
	return p, nil
}

// NormalizePhone returns a phone number as users.phone_lookup stores it:
// mainland China numbers (+86 or no country code) as the national number,
// others as "+", country code and number. Spaces, dashes and parentheses
// are ignored; ok is false for anything else that is not a digit.
func NormalizePhone(s string) (string, bool) {
	var b strings.Builder
	for i, r := range strings.TrimSpace(s) {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '(' || r == ')':
		default:
			return "", false
		}
	}
	p := b.String()
	if rest, ok := strings.CutPrefix(p, "+86"); ok {
		p = rest
	}
	digits := strings.TrimPrefix(p, "+")
	if len(digits) < 5 || len(digits) > 20 {
		return "", false
	}
	return p, true
}

// UpdateMetadata merges patch into user id's metadata: each key replaces
// the stored one, a null value removes it. The result must stay within
// MaxMetadataKeys keys of at most MaxMetadataKeyLen bytes and
// MaxMetadataBytes of JSON; clear replaces the whole object with patch.
func (s *Service) UpdateMetadata(ctx context.Context, id string, patch map[string]json.RawMessage, clear bool) (*User, error) {
	if !ids.Valid("usr", id) {
		return nil, errUserNotFound
	}
	for k := range patch {
		if k == "" || len(k) > MaxMetadataKeyLen || !utf8.ValidString(k) {
			return nil, lookupInvalid("metadata", fmt.Sprintf("metadata keys must be 1 to %d bytes of UTF-8", MaxMetadataKeyLen))
		}
	}
	var out *User
	err := db.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		u, err := lockActiveUser(ctx, tx, id)
		if err != nil {
			return err
		}
		meta := map[string]json.RawMessage{}
		if !clear && len(u.Metadata) > 0 {
			if err := json.Unmarshal(u.Metadata, &meta); err != nil {
				return fmt.Errorf("sessions: stored metadata: %w", err)
			}
		}
		for k, v := range patch {
			if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				delete(meta, k)
			} else {
				meta[k] = v
			}
		}
		if len(meta) > MaxMetadataKeys {
			return lookupInvalid("metadata", fmt.Sprintf("metadata may hold at most %d keys", MaxMetadataKeys))
		}
		raw, err := json.Marshal(meta)
		if err != nil {
			return lookupInvalid("metadata", "metadata values must be JSON")
		}
		if len(raw) > MaxMetadataBytes {
			return apperr.Newf(apperr.Invalid, "metadata_too_large", "metadata may take at most %d bytes of JSON", MaxMetadataBytes).WithDetail("field", "metadata")
		}
		if _, err := tx.ExecContext(ctx, UserSetMetadata, id, raw, s.clock()); err != nil {
			return fmt.Errorf("sessions: set metadata: %w", err)
		}
		us, err := s.users(ctx, tx, []string{id})
		if err != nil {
			return err
		}
		out = &us[0]
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// lockActiveUser locks user id (UserLockActive) and returns it; unknown
// users are errUserNotFound, erased ones errUserDeleted.
func lockActiveUser(ctx context.Context, tx *sqlx.Tx, id string) (*userRow, error) {
	var u userRow
	if err := sqlx.GetContext(ctx, tx, &u, UserLockActive, id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errUserNotFound
		}
		return nil, fmt.Errorf("sessions: lock user: %w", err)
	}
	if u.DeletedAt.Valid {
		return &u, errUserDeleted.WithDetail("deleted_at", u.DeletedAt.Time)
	}
	return &u, nil
}
