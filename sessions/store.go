package sessions

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/minigate/minigate/internal/ids"
)

// ErrNotFound is returned by store lookups that match no row.
var ErrNotFound = errors.New("sessions: not found")

// How an identity came to its user (identities.source).
const (
	IdentitySourceLogin  = "login"  // a first login created it
	IdentitySourceLink   = "link"   // the logged-in user linked it (POST /v1/me/identities)
	IdentitySourceImport = "import" // an import (minigate import leancloud) created it
)

// identityIDPrefix starts public identity ids (idn_…).
const identityIDPrefix = "idn"

// identityAppOpenIDKey is the unique constraint on (app, openid).
const identityAppOpenIDKey = "identities_app_openid_key"

// identityLockKey and unionLockKey name the advisory locks (IdentityLock)
// that serialize the writers of one identity and of one unionid in a scope.
func identityLockKey(app, openID string) string { return "identity\n" + app + "\n" + openID }
func unionLockKey(scope, unionID string) string { return "unionid\n" + scope + "\n" + unionID }

// isUniqueViolation reports whether err is Postgres refusing a row that
// breaks the unique constraint named constraint.
func isUniqueViolation(err error, constraint string) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == "23505" && pe.Constraint == constraint
}

// phone returns the user's verified phone number, nil when none.
func (u *userRow) phone() *VerifiedPhone {
	if !u.PhoneNumber.Valid {
		return nil
	}
	return &VerifiedPhone{
		Phone:      Phone{PhoneNumber: u.PhoneNumber.String, PurePhoneNumber: u.PurePhoneNumber.String, CountryCode: u.PhoneCountryCode.String},
		VerifiedAt: u.PhoneVerifiedAt.Time,
	}
}

// userRow is a row of users.
type userRow struct {
	ID               string         `db:"id"`
	PhoneNumber      sql.NullString `db:"phone_number"`
	PurePhoneNumber  sql.NullString `db:"pure_phone_number"`
	PhoneCountryCode sql.NullString `db:"phone_country_code"`
	PhoneVerifiedAt  sql.NullTime   `db:"phone_verified_at"`
	Metadata         []byte         `db:"metadata"`
	DeletedAt        sql.NullTime   `db:"deleted_at"`
	DeletedBy        sql.NullString `db:"deleted_by"`
	CreatedAt        time.Time      `db:"created_at"`
	UpdatedAt        time.Time      `db:"updated_at"`
}

// identityRow is a row of identities.
type identityRow struct {
	ID                  int64          `db:"id"`
	PublicID            string         `db:"public_id"`
	Source              string         `db:"source"`
	App                 string         `db:"app"`
	Platform            string         `db:"platform"`
	OpenID              string         `db:"openid"`
	UnionID             sql.NullString `db:"unionid"`
	UnionScope          sql.NullString `db:"union_scope"`
	AlipayUserID        sql.NullString `db:"alipay_user_id"`
	UserID              string         `db:"user_id"`
	SessionKeySealed    []byte         `db:"session_key_sealed"`
	SessionKeyUpdatedAt sql.NullTime   `db:"session_key_updated_at"`
	CreatedAt           time.Time      `db:"created_at"`
	LastLoginAt         sql.NullTime   `db:"last_login_at"`
}

// sessionRow is a row of sessions (without the token hash).
type sessionRow struct {
	ID         string    `db:"id"`
	UserID     string    `db:"user_id"`
	IdentityID int64     `db:"identity_id"`
	App        string    `db:"app"`
	CreatedAt  time.Time `db:"created_at"`
	ExpiresAt  time.Time `db:"expires_at"`
}

const userColumns = `id, phone_number, pure_phone_number, phone_country_code, phone_verified_at,
	metadata, deleted_at, deleted_by, created_at, updated_at`

const identityColumns = `id, public_id, source, app, platform, openid, unionid, union_scope, alipay_user_id, user_id,
	session_key_sealed, session_key_updated_at, created_at, last_login_at`

// Queries, named entity-first.
const (
	// IdentityLock serializes logins that could create or match the same
	// identity or unionid: transaction-scoped advisory locks on the keys in
	// $1, taken in hash order so that overlapping sets cannot deadlock.
	IdentityLock = `SELECT pg_advisory_xact_lock(h)
	FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS keys`

	IdentityGetByAppOpenID = `SELECT ` + identityColumns + ` FROM identities WHERE app = $1 AND openid = $2`

	IdentityGetBySession = `SELECT ` + identityColumns + ` FROM identities
	WHERE id = (SELECT identity_id FROM sessions WHERE id = $1)`

	IdentityListByUser = `SELECT ` + identityColumns + ` FROM identities WHERE user_id = $1 ORDER BY created_at, id`

	// IdentityListByUsers lists the identities of several users.
	IdentityListByUsers = `SELECT ` + identityColumns + ` FROM identities WHERE user_id = ANY($1) ORDER BY created_at, id`

	// IdentityFindUserByUnionID returns the user of the oldest identity
	// with this unionid in the scope, else the user an import gave the
	// unionid to (user_unionids).
	IdentityFindUserByUnionID = `SELECT user_id FROM (
	  (SELECT user_id, 0 AS pref FROM identities WHERE union_scope = $1 AND unionid = $2
	   ORDER BY created_at, id LIMIT 1)
	  UNION ALL
	  (SELECT user_id, 1 FROM user_unionids WHERE union_scope = $1 AND unionid = $2)
	) AS m ORDER BY pref LIMIT 1`

	IdentityInsert = `INSERT INTO identities
	(public_id, source, app, platform, openid, unionid, union_scope, alipay_user_id, user_id,
	 session_key_sealed, session_key_updated_at, created_at, last_login_at)
	VALUES ($10, $11, $1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8::bytea IS NULL THEN NULL ELSE $9::timestamptz END, $9, $9)
	RETURNING ` + identityColumns

	// IdentityUpdateLogin records a login on an existing identity: the
	// unionid and Alipay user id are kept when the platform omits them this
	// time, the union scope follows the app's current one, and the session
	// key is replaced when a new one came.
	IdentityUpdateLogin = `UPDATE identities SET
	unionid = COALESCE($2, unionid),
	union_scope = CASE WHEN COALESCE($2, unionid) IS NULL THEN NULL ELSE $3 END,
	alipay_user_id = COALESCE($4, alipay_user_id),
	session_key_sealed = COALESCE($5, session_key_sealed),
	session_key_updated_at = CASE WHEN $5::bytea IS NULL THEN session_key_updated_at ELSE $6 END,
	last_login_at = $6
	WHERE id = $1
	RETURNING ` + identityColumns

	UserInsert = `INSERT INTO users (id, created_at, updated_at) VALUES ($1, $2, $2)`

	UserGetByID = `SELECT ` + userColumns + ` FROM users WHERE id = $1`

	UserSetPhone = `UPDATE users SET phone_number = $2, pure_phone_number = $3, phone_country_code = $4,
	phone_verified_at = $5, updated_at = $5 WHERE id = $1 AND deleted_at IS NULL`

	SessionInsert = `INSERT INTO sessions (id, token_hash, user_id, identity_id, app, created_at, expires_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7)`

	// SessionGetActiveByTokenHash finds a session that is neither revoked
	// nor expired at $2.
	SessionGetActiveByTokenHash = `SELECT id, user_id, identity_id, app, created_at, expires_at
	FROM sessions WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2`

	SessionGetByID = `SELECT id, user_id, identity_id, app, created_at, expires_at FROM sessions WHERE id = $1`

	// SessionRevokeIfActive revokes a session unless it already is.
	SessionRevokeIfActive = `UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL`

	// SessionDeleteEndedBefore deletes at most $2 sessions that expired or
	// were revoked before $1.
	SessionDeleteEndedBefore = `DELETE FROM sessions WHERE id IN (
	SELECT id FROM sessions WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2)`
)

// PruneSessions deletes at most batch session tokens that ended (expired or
// revoked) before before, and returns how many it deleted. Users and
// identities stay.
func PruneSessions(ctx context.Context, db sqlx.ExecerContext, before time.Time, batch int) (int64, error) {
	res, err := db.ExecContext(ctx, SessionDeleteEndedBefore, before, batch)
	if err != nil {
		return 0, fmt.Errorf("sessions: prune: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sessions: prune: %w", err)
	}
	return n, nil
}

func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

// lockKeys takes transaction-scoped advisory locks on keys (IdentityLock);
// ex must be a transaction.
func lockKeys(ctx context.Context, ex sqlx.ExtContext, keys []string) error {
	if _, err := ex.ExecContext(ctx, IdentityLock, pq.Array(keys)); err != nil {
		return fmt.Errorf("sessions: lock: %w", err)
	}
	return nil
}

func getIdentityByAppOpenID(ctx context.Context, ex sqlx.ExtContext, app, openID string) (*identityRow, error) {
	var r identityRow
	if err := sqlx.GetContext(ctx, ex, &r, IdentityGetByAppOpenID, app, openID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("sessions: get identity: %w", err)
	}
	return &r, nil
}

func getIdentityBySession(ctx context.Context, ex sqlx.ExtContext, sessionID string) (*identityRow, error) {
	var r identityRow
	if err := sqlx.GetContext(ctx, ex, &r, IdentityGetBySession, sessionID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("sessions: get identity: %w", err)
	}
	return &r, nil
}

func listIdentitiesByUser(ctx context.Context, ex sqlx.ExtContext, userID string) ([]identityRow, error) {
	var rs []identityRow
	if err := sqlx.SelectContext(ctx, ex, &rs, IdentityListByUser, userID); err != nil {
		return nil, fmt.Errorf("sessions: list identities: %w", err)
	}
	return rs, nil
}

func findUserByUnionID(ctx context.Context, ex sqlx.ExtContext, scope, unionID string) (string, error) {
	var id string
	if err := sqlx.GetContext(ctx, ex, &id, IdentityFindUserByUnionID, scope, unionID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return "", ErrNotFound
		}
		return "", fmt.Errorf("sessions: find user by unionid: %w", err)
	}
	return id, nil
}

// newIdentity is what IdentityInsert and IdentityUpdateLogin write.
type newIdentity struct {
	App, Platform, OpenID string
	UnionID, UnionScope   string
	AlipayUserID, UserID  string
	SessionKeySealed      []byte
	At                    time.Time
	// Source is how the identity came (IdentitySourceLogin, …Link); set
	// for inserts only.
	Source string
}

func insertIdentity(ctx context.Context, ex sqlx.ExtContext, n newIdentity) (*identityRow, error) {
	var r identityRow
	scope := ""
	if n.UnionID != "" {
		scope = n.UnionScope
	}
	err := sqlx.GetContext(ctx, ex, &r, IdentityInsert, n.App, n.Platform, n.OpenID,
		nullString(n.UnionID), nullString(scope), nullString(n.AlipayUserID), n.UserID,
		n.SessionKeySealed, n.At, ids.New(identityIDPrefix), n.Source)
	if err != nil {
		return nil, fmt.Errorf("sessions: insert identity: %w", err)
	}
	return &r, nil
}

func updateIdentityLogin(ctx context.Context, ex sqlx.ExtContext, id int64, n newIdentity) (*identityRow, error) {
	var r identityRow
	err := sqlx.GetContext(ctx, ex, &r, IdentityUpdateLogin, id, nullString(n.UnionID),
		nullString(n.UnionScope), nullString(n.AlipayUserID), n.SessionKeySealed, n.At)
	if err != nil {
		return nil, fmt.Errorf("sessions: update identity: %w", err)
	}
	return &r, nil
}

func insertUser(ctx context.Context, ex sqlx.ExtContext, id string, at time.Time) error {
	if _, err := ex.ExecContext(ctx, UserInsert, id, at); err != nil {
		return fmt.Errorf("sessions: insert user: %w", err)
	}
	return nil
}

func getUser(ctx context.Context, ex sqlx.ExtContext, id string) (*userRow, error) {
	var r userRow
	if err := sqlx.GetContext(ctx, ex, &r, UserGetByID, id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("sessions: get user: %w", err)
	}
	return &r, nil
}

func setUserPhone(ctx context.Context, ex sqlx.ExtContext, id string, p Phone, at time.Time) error {
	res, err := ex.ExecContext(ctx, UserSetPhone, id, p.PhoneNumber, nullString(p.PurePhoneNumber), nullString(p.CountryCode), at)
	if err != nil {
		return fmt.Errorf("sessions: set phone: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

func insertSession(ctx context.Context, ex sqlx.ExtContext, s sessionRow, tokenHash []byte) error {
	_, err := ex.ExecContext(ctx, SessionInsert, s.ID, tokenHash, s.UserID, s.IdentityID, s.App, s.CreatedAt, s.ExpiresAt)
	if err != nil {
		return fmt.Errorf("sessions: insert session: %w", err)
	}
	return nil
}

func getActiveSessionByTokenHash(ctx context.Context, ex sqlx.ExtContext, hash []byte, now time.Time) (*sessionRow, error) {
	var r sessionRow
	if err := sqlx.GetContext(ctx, ex, &r, SessionGetActiveByTokenHash, hash, now); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("sessions: get session: %w", err)
	}
	return &r, nil
}

func getSession(ctx context.Context, ex sqlx.ExtContext, id string) (*sessionRow, error) {
	var r sessionRow
	if err := sqlx.GetContext(ctx, ex, &r, SessionGetByID, id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("sessions: get session: %w", err)
	}
	return &r, nil
}

func revokeSession(ctx context.Context, ex sqlx.ExtContext, id string, at time.Time) (bool, error) {
	res, err := ex.ExecContext(ctx, SessionRevokeIfActive, id, at)
	if err != nil {
		return false, fmt.Errorf("sessions: revoke session: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sessions: revoke session: %w", err)
	}
	return n == 1, nil
}
