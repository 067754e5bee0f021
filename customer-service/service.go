package customerservice

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/ids"
)

// Defaults for Options.
const (
	// DefaultBusyAttempts is how many times a call the platform answered
	// "busy" (-1) is made in all.
	DefaultBusyAttempts = 3
	// DefaultBusyBackoff is the first pause before repeating a busy call;
	// it doubles up to maxBusyBackoff.
	DefaultBusyBackoff = 200 * time.Millisecond
	maxBusyBackoff     = 2 * time.Second
	// DefaultMediaLimit bounds uploaded images when Options.MediaLimit is 0.
	DefaultMediaLimit = 10 << 20
	// DefaultBodyLimit bounds JSON bodies when Options.BodyLimit is 0.
	DefaultBodyLimit = 1 << 20
)

// Bounds on what a send may carry. The platforms are the authority on
// content; these keep nonsense out of the database.
const (
	// MaxTextBytes bounds a text message's content.
	MaxTextBytes = 4096
	// maxFieldBytes bounds every other field (titles, URLs, media ids).
	maxFieldBytes = 1024
	// maxOpenIDBytes bounds an openid.
	maxOpenIDBytes = 128
	// maxErrorMessage bounds the platform message kept with a failed send.
	maxErrorMessage = 256
)

// App is one configured app as customer service sees it.
type App struct {
	ID       string
	Platform string
	// CustomerService is the platform's customer-service API; nil answers
	// 501 like a platform without one.
	CustomerService Platform
}

// Availability is implemented by a Platform that can tell up front that
// its app has no customer-service API (Alipay): Available returns the
// *adapters.UnsupportedError every call would, and the service answers 501
// before it computes windows or records anything.
type Availability interface {
	Available() error
}

// Options configures New.
type Options struct {
	Apps []App
	// BodyLimit bounds JSON request bodies (config limits.body_bytes).
	BodyLimit int
	// MediaLimit bounds uploaded images (config limits.media_bytes).
	MediaLimit int
	// BusyAttempts and BusyBackoff bound the retries of calls the platform
	// answered "busy"; zero means the defaults.
	BusyAttempts int
	BusyBackoff  time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Service sends customer-service messages within the reply windows,
// records them in their conversations, and serves the inbox, typing and
// media.
type Service struct {
	db      *sqlx.DB
	apps    map[string]*App
	opts    Options
	log     *slog.Logger
	fetches flights
}

// New returns the customer-service service over pool for opts.Apps.
func New(pool *sqlx.DB, opts Options) (*Service, error) {
	if pool == nil {
		return nil, errors.New("customerservice: new: no database")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.BusyAttempts <= 0 {
		opts.BusyAttempts = DefaultBusyAttempts
	}
	if opts.BusyBackoff <= 0 {
		opts.BusyBackoff = DefaultBusyBackoff
	}
	if opts.MediaLimit <= 0 {
		opts.MediaLimit = DefaultMediaLimit
	}
	if opts.BodyLimit <= 0 {
		opts.BodyLimit = DefaultBodyLimit
	}
	apps := make(map[string]*App, len(opts.Apps))
	for i := range opts.Apps {
		a := opts.Apps[i]
		if a.ID == "" {
			return nil, errors.New("customerservice: new: an app without an id")
		}
		if _, dup := apps[a.ID]; dup {
			return nil, fmt.Errorf("customerservice: new: app %q twice", a.ID)
		}
		apps[a.ID] = &a
	}
	return &Service{db: pool, apps: apps, opts: opts, log: opts.Logger, fetches: flights{m: map[string]*flight{}}}, nil
}

var (
	errAppNotFound          = apperr.New(apperr.NotFound, "app_not_found", "no such app")
	errConversationNotFound = apperr.New(apperr.NotFound, "conversation_not_found", "no conversation with this user")
)

// now is the service clock at the precision Postgres stores.
func (s *Service) now() time.Time { return s.opts.Now().UTC().Truncate(time.Microsecond) }

// app returns the app with id if its platform can send, or the error to
// answer: 404 for unknown apps, 501 for platforms without the API.
func (s *Service) app(id string) (*App, error) {
	a, err := s.knownApp(id)
	if err != nil {
		return nil, err
	}
	if err := available(a); err != nil {
		return nil, err
	}
	return a, nil
}

// available returns nil when a's platform has a customer-service API, else
// the *adapters.UnsupportedError to answer.
func available(a *App) error {
	if a.CustomerService == nil {
		return &adapters.UnsupportedError{Platform: a.Platform, Feature: "customer-service messages"}
	}
	if av, ok := a.CustomerService.(Availability); ok {
		return av.Available()
	}
	return nil
}

// SendRequest is a customer-service message to send. Only the fields of
// its Type may be set.
type SendRequest struct {
	// To is the user's openid.
	To   string `json:"to"`
	Type string `json:"type"`
	// Content is a text message's text.
	Content string `json:"content,omitempty"`
	// MediaID is an image message's media (from POST /media or a user's
	// image); for multipart sends Image is set instead.
	MediaID string `json:"media_id,omitempty"`
	// Title: link and miniprogrampage.
	Title string `json:"title,omitempty"`
	// Description, URL and ThumbURL: link.
	Description string `json:"description,omitempty"`
	URL         string `json:"url,omitempty"`
	ThumbURL    string `json:"thumb_url,omitempty"`
	// PagePath and ThumbMediaID: miniprogrampage.
	PagePath     string `json:"page_path,omitempty"`
	ThumbMediaID string `json:"thumb_media_id,omitempty"`
	// Image is uploaded and sent (type image, multipart requests).
	Image *Image `json:"-"`
}

// outbound validates r and returns the message it describes.
func (r SendRequest) outbound() (Outbound, error) {
	if err := checkField("to", r.To, maxOpenIDBytes, true); err != nil {
		return Outbound{}, err
	}
	out := Outbound{To: r.To, Type: r.Type}
	// The fields the type takes; all others must be empty.
	var fields []field
	switch r.Type {
	case TypeText:
		fields = []field{{"content", r.Content, true}}
		out.Content = r.Content
	case TypeImage:
		if r.Image != nil && r.MediaID != "" {
			return Outbound{}, invalid("media_id", "send either a media_id or an image file, not both")
		}
		fields = []field{{"media_id", r.MediaID, r.Image == nil}}
		out.MediaID = r.MediaID
	case TypeLink:
		fields = []field{{"title", r.Title, true}, {"description", r.Description, false},
			{"url", r.URL, true}, {"thumb_url", r.ThumbURL, false}}
		out.Title, out.Description, out.URL, out.ThumbURL = r.Title, r.Description, r.URL, r.ThumbURL
	case TypeMiniProgramPage:
		fields = []field{{"title", r.Title, true}, {"page_path", r.PagePath, true}, {"thumb_media_id", r.ThumbMediaID, true}}
		out.Title, out.PagePath, out.ThumbMediaID = r.Title, r.PagePath, r.ThumbMediaID
	case "":
		return Outbound{}, invalid("type", "type is required: text, image, link or miniprogrampage")
	default:
		return Outbound{}, invalid("type", "type must be text, image, link or miniprogrampage")
	}
	if r.Image != nil && r.Type != TypeImage {
		return Outbound{}, invalid("media", "an image file can only be sent as type image")
	}
	allowed := map[string]bool{}
	for _, f := range fields {
		allowed[f.name] = true
		limit := maxFieldBytes
		if f.name == "content" {
			limit = MaxTextBytes
		}
		if err := checkField(f.name, f.value, limit, f.required); err != nil {
			return Outbound{}, err
		}
	}
	// Fields of other types are refused rather than silently dropped.
	for _, f := range []field{{"content", r.Content, false}, {"media_id", r.MediaID, false}, {"title", r.Title, false},
		{"description", r.Description, false}, {"url", r.URL, false}, {"thumb_url", r.ThumbURL, false},
		{"page_path", r.PagePath, false}, {"thumb_media_id", r.ThumbMediaID, false}} {
		if f.value != "" && !allowed[f.name] {
			return Outbound{}, invalid(f.name, "%s does not apply to type %s", f.name, r.Type)
		}
	}
	for _, f := range []field{{"url", r.URL, false}, {"thumb_url", r.ThumbURL, false}} {
		if f.value != "" && !strings.HasPrefix(f.value, "https://") && !strings.HasPrefix(f.value, "http://") {
			return Outbound{}, invalid(f.name, "%s must be an http(s) URL", f.name)
		}
	}
	return out, nil
}

// field is one request field a message type takes.
type field struct {
	name, value string
	required    bool
}

// checkField refuses missing required values, oversized values, invalid
// UTF-8 and control characters other than newlines and tabs.
func checkField(name, v string, limit int, required bool) error {
	switch {
	case v == "" && required:
		return invalid(name, "%s is required", name)
	case len(v) > limit:
		return invalid(name, "%s exceeds %d bytes", name, limit)
	case !utf8.ValidString(v):
		return invalid(name, "%s is not valid UTF-8", name)
	}
	for _, r := range v {
		if r < 0x20 && r != '\n' && r != '\t' && r != '\r' || r == 0x7f {
			return invalid(name, "%s contains control characters", name)
		}
	}
	return nil
}

func invalid(field, format string, args ...any) *apperr.Error {
	return apperr.Newf(apperr.Invalid, "invalid_"+field, format, args...).WithDetail("field", field)
}

// Send sends req to its user on behalf of sentBy (an API key name). The
// reply window is checked first, under a lock on the conversation, and
// the message is reserved (status sending) in the same transaction, so
// concurrent sends cannot both take the last slot. Then an attached image
// is uploaded, the platform is called (busy answers are retried with
// back-off), and the outcome is recorded. Platform refusals come back as
// API errors with the message id in their details.
func (s *Service) Send(ctx context.Context, appID string, req SendRequest, sentBy string) (*Message, error) {
	a, err := s.app(appID)
	if err != nil {
		return nil, err
	}
	out, err := req.outbound()
	if err != nil {
		return nil, err
	}
	if req.Image != nil {
		if err := s.checkImage(req.Image); err != nil {
			return nil, err
		}
	}
	msg, err := s.reserve(ctx, a, out, sentBy)
	if err != nil {
		return nil, err
	}
	// The send goes on when the client goes away: its outcome must be
	// recorded either way.
	ctx = context.WithoutCancel(ctx)
	var uploaded *MediaInfo
	if req.Image != nil {
		uploaded, err = s.upload(ctx, a, req.Image)
		if err == nil {
			out.MediaID = uploaded.MediaID
		}
	}
	if err == nil {
		err = s.retryBusy(ctx, func() error { return a.CustomerService.SendMessage(ctx, out) })
	}
	mediaID := ""
	if uploaded != nil {
		mediaID = uploaded.MediaID
	}
	done, ferr := s.finish(ctx, msg, err, mediaID)
	if ferr != nil {
		s.log.ErrorContext(ctx, "customer-service send: outcome not recorded", "app", a.ID, "message_id", msg.ID,
			"sent", err == nil, "err", ferr)
		return nil, ferr
	}
	if err != nil {
		return nil, sendError(err, done.ID)
	}
	return done, nil
}

// reserve checks the reply window and inserts msg as sending, in one
// transaction holding the conversation's row lock.
func (s *Service) reserve(ctx context.Context, a *App, out Outbound, sentBy string) (*Message, error) {
	now := s.now()
	m := &Message{
		ID: ids.New("msg"), App: a.ID, OpenID: out.To, Direction: DirectionOut, Type: out.Type,
		Content: out.Content, MediaID: out.MediaID, Title: out.Title, PagePath: out.PagePath,
		ThumbURL: out.ThumbURL, ThumbMediaID: out.ThumbMediaID, Description: out.Description, URL: out.URL,
		Status: StatusSending, SentBy: sentBy, CreatedAt: now, ReceivedAt: now,
	}
	err := db.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		w, err := windowForUpdate(ctx, tx, a.ID, out.To, now)
		if err != nil {
			return err
		}
		if !w.Open {
			return windowError(w)
		}
		_, err = tx.ExecContext(ctx, MessageInsertOutbound, m.ID, m.App, m.OpenID, m.Type, m.Content, m.MediaID,
			m.Title, m.PagePath, m.ThumbURL, m.ThumbMediaID, m.Description, m.URL, m.SentBy, m.CreatedAt)
		if err != nil {
			return fmt.Errorf("customerservice: reserve message: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// windowForUpdate locks the conversation with openid and computes its
// reply window at now. A user without a conversation has no window.
func windowForUpdate(ctx context.Context, tx *sqlx.Tx, app, openid string, now time.Time) (Window, error) {
	var conv struct {
		LastUserMessageAt *time.Time `db:"last_user_message_at"`
		SessionEnteredAt  *time.Time `db:"session_entered_at"`
		MessageReceivedAt *time.Time `db:"last_user_message_received_at"`
		SessionReceivedAt *time.Time `db:"session_entered_received_at"`
	}
	err := tx.GetContext(ctx, &conv, ConversationLockForSend, app, openid)
	if errors.Is(err, sql.ErrNoRows) {
		return computeWindow(now, windowInput{}), nil
	}
	if err != nil {
		return Window{}, fmt.Errorf("customerservice: lock conversation: %w", err)
	}
	var counts struct {
		SinceMessage int `db:"since_message"`
		SinceSession int `db:"since_session"`
	}
	if err := tx.GetContext(ctx, &counts, MessageCountReplies, app, openid, conv.MessageReceivedAt, conv.SessionReceivedAt); err != nil {
		return Window{}, fmt.Errorf("customerservice: count replies: %w", err)
	}
	return computeWindow(now, windowInput{
		LastUserMessageAt: conv.LastUserMessageAt, SessionEnteredAt: conv.SessionEnteredAt,
		SentSinceMessage: counts.SinceMessage, SentSinceSession: counts.SinceSession,
	}), nil
}

// windowError is the API error for a closed window: 429
// reply_quota_exceeded when every allowed message was sent, else 409
// reply_window_closed with the time it closed.
func windowError(w Window) *apperr.Error {
	if w.ClosedReason == ClosedQuotaUsed {
		return apperr.New(apperr.RateLimited, "reply_quota_exceeded",
			"every message the platform allows since the user last wrote was sent; the quota renews when the user writes again").
			WithDetail("closed_reason", w.ClosedReason).WithDetail("window_ends_at", w.ClosesAt)
	}
	msg := "the user has not written to the app; the platform allows replies only after a user message or session entry"
	if w.ClosedReason == ClosedExpired {
		msg = "the reply window closed at " + w.ClosesAt.Format(time.RFC3339) + "; it reopens when the user writes again"
	}
	return apperr.New(apperr.Conflict, "reply_window_closed", msg).
		WithDetail("closed_reason", w.ClosedReason).WithDetail("closed_at", w.ClosesAt)
}

// finish records the outcome of msg's send (callErr nil: sent) and, when
// it was sent, makes it the conversation's latest message and recounts the
// unanswered messages.
func (s *Service) finish(ctx context.Context, msg *Message, callErr error, mediaID string) (*Message, error) {
	status, code, text := outcome(callErr)
	var sentAt *time.Time
	if status == StatusSent {
		t := s.now()
		sentAt = &t
	}
	var done Message
	err := db.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, ConversationLock, msg.App, msg.OpenID); err != nil {
			return fmt.Errorf("customerservice: lock conversation: %w", err)
		}
		var row messageRow
		if err := tx.GetContext(ctx, &row, MessageFinishOutbound, msg.ID, status, code, text, sentAt, mediaID); err != nil {
			return fmt.Errorf("customerservice: record send outcome: %w", err)
		}
		done = row.message()
		if status != StatusSent {
			return nil
		}
		if _, err := tx.ExecContext(ctx, ConversationTouchOutbound, done.App, done.OpenID, done.ID, done.CreatedAt,
			done.Type, preview(done)); err != nil {
			return fmt.Errorf("customerservice: update conversation: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &done, nil
}

// outcome classifies a send's error: sent; unknown when the platform did
// not answer in time (the message may have been delivered); failed
// otherwise, with the platform's code, or minigate's reason when the
// platform gave none.
func outcome(err error) (status, code, message string) {
	if err == nil {
		return StatusSent, "", ""
	}
	pe, ok := adapters.AsPlatformError(err)
	if !ok {
		if ae, ok := apperr.As(err); ok {
			return StatusFailed, ae.Code, truncate(ae.Message, maxErrorMessage)
		}
		return StatusFailed, "internal_error", ""
	}
	status = StatusFailed
	if pe.Reason == adapters.ReasonTimeout {
		status = StatusUnknown
	}
	code = pe.Code
	if code == "" {
		code = string(pe.Reason)
	}
	return status, code, truncate(pe.Message, maxErrorMessage)
}

// sendError is the API error for a failed send of message id.
func sendError(err error, id string) error {
	if adapters.HasReason(err, adapters.ReasonNotFound) {
		// custom/send answers 40007 for a media id it does not know.
		pe, _ := adapters.AsPlatformError(err)
		return apperr.Wrap(err, apperr.Invalid, "invalid_media_id",
			"the platform does not know this media id (expired, or not this app's)").
			WithDetail("platform", pe.Platform).WithDetail("platform_code", pe.Code).WithDetail("message_id", id)
	}
	if ae, ok := adapters.ToAppError(err).(*apperr.Error); ok {
		return ae.WithDetail("message_id", id)
	}
	return err
}

// retryBusy calls call, and again after a growing pause while the platform
// answers busy, BusyAttempts times in all.
func (s *Service) retryBusy(ctx context.Context, call func() error) error {
	delay := s.opts.BusyBackoff
	for attempt := 1; ; attempt++ {
		err := call()
		if attempt >= s.opts.BusyAttempts || !adapters.HasReason(err, adapters.ReasonBusy) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		delay = min(2*delay, maxBusyBackoff)
	}
}

// SetTyping shows or cancels the typing indicator for openid. Showing it
// needs an open reply window (the platform also wants a message exchanged
// in the last 30 seconds, which only it checks).
func (s *Service) SetTyping(ctx context.Context, appID, openid string, typing bool) error {
	a, err := s.app(appID)
	if err != nil {
		return err
	}
	if err := checkField("openid", openid, maxOpenIDBytes, true); err != nil {
		return err
	}
	if typing {
		c, err := s.conversation(ctx, a.ID, openid)
		if err != nil {
			return err
		}
		if w := c.ReplyWindow; w != nil && !w.Open && w.ClosedReason != ClosedQuotaUsed {
			return windowError(*w)
		}
	}
	return s.retryBusy(ctx, func() error { return a.CustomerService.SetTyping(ctx, openid, typing) })
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
