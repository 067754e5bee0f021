package sessions

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/ids"
)

// App is one configured mini-program as the sessions service sees it.
type App struct {
	ID         string // minigate's app id, the {app} in routes
	Platform   string // wechat, qq or alipay
	AppID      string // the platform's app id; decrypted user data must carry it in its watermark
	UnionScope string // apps with the same scope share one user per unionid; "" = none
	Login      Authenticator
	Phone      PhoneNumberer // nil when the platform has no phone-number API
}

// Options configure New.
type Options struct {
	// SecretKey seals session keys at rest (config secret_key).
	SecretKey string
	// TTL is how long a session token lives.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives diagnostics (never tokens, codes or session keys).
	Logger *slog.Logger
	// Publish records an event in the caller's transaction (user.deleted);
	// nil records none.
	Publish func(ctx context.Context, tx *sqlx.Tx, typ string, data any) error
}

// Service logs users in and keeps their sessions. It implements
// auth.SessionResolver.
type Service struct {
	db     *sqlx.DB
	apps   map[string]*App
	sealer *sealer
	ttl    time.Duration
	now    func() time.Time
	log    *slog.Logger

	publish      func(ctx context.Context, tx *sqlx.Tx, typ string, data any) error
	erasers      []Eraser
	pseudonymKey []byte // Erasure.Pseudonym
	erasedKey    []byte // erased_external_ids hashes
}

// tokenBytes is the entropy of a session token (256 bits); tokenLen is the
// length of its unpadded base64url form.
const (
	tokenBytes = 32
	tokenLen   = 43
	// maxCodeLen bounds login and phone codes (real ones are 32 chars).
	maxCodeLen = 256
)

// New returns a Service for the given apps.
func New(pool *sqlx.DB, apps []App, opts Options) (*Service, error) {
	sl, err := newSealer(opts.SecretKey)
	if err != nil {
		return nil, err
	}
	if opts.TTL <= 0 {
		return nil, errors.New("sessions: TTL must be positive")
	}
	s := &Service{db: pool, apps: make(map[string]*App, len(apps)), sealer: sl, ttl: opts.TTL, now: opts.Now, log: opts.Logger, publish: opts.Publish}
	if s.pseudonymKey, err = deriveKey(opts.SecretKey, purposePseudonym); err != nil {
		return nil, err
	}
	if s.erasedKey, err = deriveKey(opts.SecretKey, purposeErasedExternalID); err != nil {
		return nil, err
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	for i := range apps {
		a := apps[i]
		if a.Login == nil {
			return nil, fmt.Errorf("sessions: app %q has no authenticator", a.ID)
		}
		s.apps[a.ID] = &a
	}
	return s, nil
}

// clock returns the current time at the precision Postgres stores, so that
// times in responses equal the stored ones.
func (s *Service) clock() time.Time {
	return s.now().UTC().Truncate(time.Microsecond)
}

// errAppNotFound is returned for an unknown {app}.
var errAppNotFound = apperr.New(apperr.NotFound, "app_not_found", "no such app")

func (s *Service) app(id string) (*App, error) {
	a, ok := s.apps[id]
	if !ok {
		return nil, errAppNotFound
	}
	return a, nil
}

// LoginResult is the answer to a login: the session token (shown once) and
// the user it belongs to.
type LoginResult struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	User      LoginUser `json:"user"`
}

// LoginUser is the user part of a LoginResult.
type LoginUser struct {
	ID      string  `json:"id"`
	OpenID  string  `json:"openid"`
	UnionID *string `json:"unionid"`
}

func checkCode(code string) error {
	if code == "" {
		return apperr.New(apperr.Invalid, "invalid_code", "code is required").WithDetail("field", "code")
	}
	if len(code) > maxCodeLen {
		return apperr.Newf(apperr.Invalid, "invalid_code", "code is longer than %d bytes", maxCodeLen).WithDetail("field", "code")
	}
	return nil
}

// Login exchanges a login code from wx.login / qq.login / my.getAuthCode for
// a session of the user behind it.
//
// Identity matching: the identity is (app, openid), where Alipay's openid is
// its open_id, or its user_id for apps without open ids. An existing
// identity logs in to its user. A new identity joins the user that already
// has preferUnionID's unionid within the app's union scope (the oldest such
// identity's user) when preferUnionID is set, the platform returned a
// unionid and the app has a scope; otherwise it gets a new user. Without
// preferUnionID, a unionid that matches another user is stored on the
// identity but does not link the two (the convention of hosted
// mini-program backends): linking is opt-in. An identity is never moved
// from one user to another, since its orders and conversations belong to
// that user. The unionid and the latest session key are stored on every
// login that returns them.
//
// Logins that could create the same identity or match the same unionid are
// serialized with transaction-scoped advisory locks, so concurrent first
// logins create one user.
func (s *Service) Login(ctx context.Context, appID, code string, preferUnionID bool) (*LoginResult, error) {
	a, err := s.app(appID)
	if err != nil {
		return nil, err
	}
	if err := checkCode(code); err != nil {
		return nil, err
	}
	login, err := a.Login.Code2Session(ctx, code)
	if err != nil {
		return nil, adapters.ToAppError(fmt.Errorf("sessions: code2session: %w", err))
	}
	if login.OpenID == "" {
		return nil, apperr.New(apperr.Unavailable, "platform_bad_response", "the platform returned no user identity")
	}
	token, hash, err := newToken()
	if err != nil {
		return nil, err
	}
	now := s.clock()
	n := newIdentity{
		App: a.ID, Platform: a.Platform, OpenID: login.OpenID,
		UnionID: login.UnionID, UnionScope: a.UnionScope, AlipayUserID: login.AlipayUserID, At: now,
	}
	if login.SessionKey != "" {
		n.SessionKeySealed = s.sealer.seal(login.SessionKey, a.ID, login.OpenID)
	}
	matchUnion := preferUnionID && login.UnionID != "" && a.UnionScope != ""
	sess := sessionRow{ID: ids.New("ses"), App: a.ID, CreatedAt: now, ExpiresAt: now.Add(s.ttl)}
	var (
		ident   *identityRow
		created bool
	)
	// A writer that does not take the login locks (an import) can create
	// the identity between the lookup and the insert: the unique index
	// refuses the insert, and the login runs again and finds it.
	for attempt := 0; ; attempt++ {
		ident, created, err = s.loginTx(ctx, a, n, matchUnion, &sess, hash)
		if err == nil || attempt == 1 || !isUniqueViolation(err, identityAppOpenIDKey) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sessions: login: %w", err)
	}
	s.log.InfoContext(ctx, "session created", "app", a.ID, "user_id", ident.UserID,
		"session_id", sess.ID, "new_user", created)
	res := &LoginResult{Token: token, ExpiresAt: sess.ExpiresAt, User: LoginUser{ID: ident.UserID, OpenID: ident.OpenID}}
	if ident.UnionID.Valid {
		res.User.UnionID = &ident.UnionID.String
	}
	return res, nil
}

// loginTx is Login's transaction: find or create the identity (and its
// user) under the login locks, and insert the session.
func (s *Service) loginTx(ctx context.Context, a *App, n newIdentity, matchUnion bool, sess *sessionRow, hash []byte) (*identityRow, bool, error) {
	var (
		ident   *identityRow
		created bool
	)
	err := db.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		keys := []string{identityLockKey(n.App, n.OpenID)}
		if matchUnion {
			keys = append(keys, unionLockKey(a.UnionScope, n.UnionID))
		}
		if err := lockKeys(ctx, tx, keys); err != nil {
			return err
		}
		existing, err := getIdentityByAppOpenID(ctx, tx, n.App, n.OpenID)
		switch {
		case err == nil:
			ident, err = updateIdentityLogin(ctx, tx, existing.ID, n)
			if err != nil {
				return err
			}
		case errors.Is(err, ErrNotFound):
			n := n
			n.Source = IdentitySourceLogin
			if matchUnion {
				n.UserID, err = findUserByUnionID(ctx, tx, a.UnionScope, n.UnionID)
				if err != nil && !errors.Is(err, ErrNotFound) {
					return err
				}
			}
			if n.UserID == "" {
				n.UserID, created = ids.New("usr"), true
				if err := insertUser(ctx, tx, n.UserID, n.At); err != nil {
					return err
				}
			}
			if ident, err = insertIdentity(ctx, tx, n); err != nil {
				return err
			}
		default:
			return err
		}
		sess.UserID, sess.IdentityID = ident.UserID, ident.ID
		return insertSession(ctx, tx, *sess, hash)
	})
	return ident, created, err
}

// newToken returns a fresh session token and its hash.
func newToken() (string, []byte, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("sessions: token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// ResolveSession implements auth.SessionResolver: it returns the principal
// of an active session token, or an error wrapping auth.ErrUnauthenticated
// for unknown, expired or revoked tokens and tokens of apps no longer
// configured.
func (s *Service) ResolveSession(ctx context.Context, token string) (auth.Principal, error) {
	if len(token) != tokenLen {
		return auth.Principal{}, fmt.Errorf("sessions: malformed token: %w", auth.ErrUnauthenticated)
	}
	row, err := getActiveSessionByTokenHash(ctx, s.db, hashToken(token), s.clock())
	if errors.Is(err, ErrNotFound) {
		return auth.Principal{}, fmt.Errorf("sessions: no active session: %w", auth.ErrUnauthenticated)
	}
	if err != nil {
		return auth.Principal{}, err
	}
	if _, ok := s.apps[row.App]; !ok {
		return auth.Principal{}, fmt.Errorf("sessions: app %q is no longer configured: %w", row.App, auth.ErrUnauthenticated)
	}
	return auth.Principal{Kind: auth.KindUser, UserID: row.UserID, SessionID: row.ID, App: row.App}, nil
}

// Me is the current user with the identities linked to it.
type Me struct {
	ID         string         `json:"id"`
	Phone      *VerifiedPhone `json:"phone"`
	CreatedAt  time.Time      `json:"created_at"`
	Identities []IdentityView `json:"identities"`
	Session    SessionView    `json:"session"`
}

// VerifiedPhone is a phone number verified through the platform.
type VerifiedPhone struct {
	Phone
	VerifiedAt time.Time `json:"verified_at"`
}

// IdentityView is a platform identity as the API shows it (never the
// session key).
type IdentityView struct {
	ID           string  `json:"id"`
	App          string  `json:"app"`
	Platform     string  `json:"platform"`
	OpenID       string  `json:"openid"`
	UnionID      *string `json:"unionid"`
	AlipayUserID *string `json:"alipay_user_id,omitempty"`
	// Source is how the identity came: login, link or import.
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
	// LastLoginAt is null for an imported identity that has not logged in
	// through minigate yet.
	LastLoginAt *time.Time `json:"last_login_at"`
}

func identityView(i *identityRow) IdentityView {
	v := IdentityView{
		ID: i.PublicID, App: i.App, Platform: i.Platform, OpenID: i.OpenID,
		UnionID: optional(i.UnionID), AlipayUserID: optional(i.AlipayUserID),
		Source: i.Source, CreatedAt: i.CreatedAt,
	}
	if i.LastLoginAt.Valid {
		v.LastLoginAt = &i.LastLoginAt.Time
	}
	return v
}

// SessionView describes the session a request was made with.
type SessionView struct {
	ID        string    `json:"id"`
	App       string    `json:"app"`
	ExpiresAt time.Time `json:"expires_at"`
}

func optional(ns sql.NullString) *string {
	if !ns.Valid {
		return nil
	}
	return &ns.String
}

// Me returns the principal's user and identities.
func (s *Service) Me(ctx context.Context, p auth.Principal) (*Me, error) {
	u, err := getUser(ctx, s.db, p.UserID)
	if err != nil {
		return nil, fmt.Errorf("sessions: me: %w", err)
	}
	sess, err := getSession(ctx, s.db, p.SessionID)
	if err != nil {
		return nil, fmt.Errorf("sessions: me: %w", err)
	}
	idents, err := listIdentitiesByUser(ctx, s.db, p.UserID)
	if err != nil {
		return nil, err
	}
	me := &Me{
		ID: u.ID, CreatedAt: u.CreatedAt, Identities: make([]IdentityView, 0, len(idents)),
		Session: SessionView{ID: sess.ID, App: sess.App, ExpiresAt: sess.ExpiresAt},
	}
	me.Phone = u.phone()
	for i := range idents {
		me.Identities = append(me.Identities, identityView(&idents[i]))
	}
	return me, nil
}

// Logout revokes the principal's session.
func (s *Service) Logout(ctx context.Context, p auth.Principal) error {
	_, err := revokeSession(ctx, s.db, p.SessionID, s.clock())
	return err
}

// PhoneNumber resolves a getPhoneNumber code with the platform of the
// principal's session and stores the verified number on the user.
func (s *Service) PhoneNumber(ctx context.Context, p auth.Principal, code string) (*VerifiedPhone, error) {
	a, err := s.app(p.App)
	if err != nil {
		return nil, err
	}
	if err := checkCode(code); err != nil {
		return nil, err
	}
	if a.Phone == nil {
		return nil, adapters.ToAppError(&adapters.UnsupportedError{Platform: a.Platform, Feature: "phone_number"})
	}
	phone, err := a.Phone.PhoneNumber(ctx, code)
	if err != nil {
		if adapters.HasReason(err, adapters.ReasonInvalidCode) {
			return nil, apperr.Wrap(err, apperr.Invalid, "invalid_code", "the phone code is invalid, expired or already used")
		}
		return nil, adapters.ToAppError(fmt.Errorf("sessions: phone number: %w", err))
	}
	if phone.PhoneNumber == "" {
		return nil, apperr.New(apperr.Unavailable, "platform_bad_response", "the platform returned no phone number")
	}
	now := s.clock()
	if err := setUserPhone(ctx, s.db, p.UserID, phone, now); err != nil {
		return nil, fmt.Errorf("sessions: phone number: %w", err)
	}
	s.log.InfoContext(ctx, "phone number verified", "app", a.ID, "user_id", p.UserID)
	return &VerifiedPhone{Phone: phone, VerifiedAt: now}, nil
}

// Decrypt errors.
var (
	errNoSessionKey = apperr.New(apperr.Conflict, "session_key_unavailable",
		"no usable session key is stored for this login; log in again")
	errInvalidEncrypted = apperr.New(apperr.Invalid, "invalid_encrypted_data",
		"encrypted_data and iv must be base64 (iv 16 bytes, data a multiple of 16 bytes)")
	errDecryptFailed = apperr.New(apperr.Invalid, "decrypt_failed",
		"the data does not decrypt with the current session key; it may predate the latest login")
	errWatermarkMismatch = apperr.New(apperr.Invalid, "watermark_mismatch",
		"the decrypted data belongs to another app (watermark appid)")
)

// Decrypt opens encrypted user data (encryptedData and iv from the
// mini-program) with the session key of the principal's login and checks
// that its watermark names the app. It returns the decrypted JSON object.
func (s *Service) Decrypt(ctx context.Context, p auth.Principal, encryptedData, iv string) ([]byte, error) {
	switch {
	case encryptedData == "":
		return nil, apperr.New(apperr.Invalid, "invalid_encrypted_data", "encrypted_data is required").WithDetail("field", "encrypted_data")
	case iv == "":
		return nil, apperr.New(apperr.Invalid, "invalid_encrypted_data", "iv is required").WithDetail("field", "iv")
	}
	a, err := s.app(p.App)
	if err != nil {
		return nil, err
	}
	if a.Platform == "alipay" {
		return nil, adapters.ToAppError(&adapters.UnsupportedError{Platform: a.Platform, Feature: "decrypt"})
	}
	ident, err := getIdentityBySession(ctx, s.db, p.SessionID)
	if err != nil {
		return nil, fmt.Errorf("sessions: decrypt: %w", err)
	}
	if ident.SessionKeySealed == nil {
		return nil, errNoSessionKey
	}
	key, err := s.sealer.open(ident.SessionKeySealed, ident.App, ident.OpenID)
	if err != nil {
		s.log.WarnContext(ctx, "stored session key does not open (secret_key changed?)", "app", ident.App, "identity_id", ident.ID)
		return nil, errNoSessionKey.WithCause(err)
	}
	out, err := decryptUserData(key, encryptedData, iv, a.AppID)
	switch {
	case err == nil:
		return out, nil
	case errors.Is(err, errBadEncoding):
		return nil, errInvalidEncrypted.WithCause(err)
	case errors.Is(err, errWatermark):
		return nil, errWatermarkMismatch.WithCause(err)
	case errors.Is(err, errDecrypt), errors.Is(err, errNotJSONObject):
		return nil, errDecryptFailed.WithCause(err)
	default:
		return nil, err
	}
}

var _ auth.SessionResolver = (*Service)(nil)
