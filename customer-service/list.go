package customerservice

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/minigate/minigate/internal/apperr"
)

// Paging limits of the inbox routes.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// Conversation is one user's conversation with an app, as the inbox lists
// it.
type Conversation struct {
	App    string `json:"app"`
	OpenID string `json:"openid"`
	// LastMessage is the latest message in either direction (nil when the
	// user only entered the session).
	LastMessage *LastMessage `json:"last_message"`
	// LastUserMessageAt and SessionEnteredAt are what the reply window is
	// computed from.
	LastUserMessageAt *time.Time `json:"last_user_message_at"`
	SessionEnteredAt  *time.Time `json:"session_entered_at"`
	// Unanswered counts the user's messages received after the last
	// reply was made.
	Unanswered int `json:"unanswered"`
	// ReplyWindow is nil for platforms without customer-service sends.
	ReplyWindow    *Window   `json:"reply_window"`
	LastActivityAt time.Time `json:"last_activity_at"`
	CreatedAt      time.Time `json:"created_at"`
}

// LastMessage summarises a conversation's latest message.
type LastMessage struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Preview   string    `json:"preview"`
	Direction string    `json:"direction"`
	At        time.Time `json:"at"`
}

type conversationRow struct {
	App                string     `db:"app"`
	OpenID             string     `db:"openid"`
	LastMessageID      *string    `db:"last_message_id"`
	LastMessageType    *string    `db:"last_message_type"`
	LastMessagePreview *string    `db:"last_message_preview"`
	LastDirection      *string    `db:"last_direction"`
	LastMessageAt      *time.Time `db:"last_message_at"`
	LastUserMessageAt  *time.Time `db:"last_user_message_at"`
	SessionEnteredAt   *time.Time `db:"session_entered_at"`
	Unanswered         int        `db:"unanswered"`
	LastActivityAt     time.Time  `db:"last_activity_at"`
	CreatedAt          time.Time  `db:"created_at"`
	SinceMessage       int        `db:"since_message"`
	SinceSession       int        `db:"since_session"`
}

func (r conversationRow) conversation(now time.Time, withWindow bool) Conversation {
	c := Conversation{
		App: r.App, OpenID: r.OpenID, LastUserMessageAt: r.LastUserMessageAt, SessionEnteredAt: r.SessionEnteredAt,
		Unanswered: r.Unanswered, LastActivityAt: r.LastActivityAt, CreatedAt: r.CreatedAt,
	}
	if r.LastMessageID != nil && r.LastMessageAt != nil {
		c.LastMessage = &LastMessage{ID: *r.LastMessageID, Type: deref(r.LastMessageType),
			Preview: deref(r.LastMessagePreview), Direction: deref(r.LastDirection), At: *r.LastMessageAt}
	}
	if withWindow {
		w := computeWindow(now, windowInput{
			LastUserMessageAt: r.LastUserMessageAt, SessionEnteredAt: r.SessionEnteredAt,
			SentSinceMessage: r.SinceMessage, SentSinceSession: r.SinceSession,
		})
		c.ReplyWindow = &w
	}
	return c
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// messageRow is a Message as read from the database.
type messageRow struct {
	Message
	FieldsJSON *string `db:"fields"`
}

func (r messageRow) message() Message {
	m := r.Message
	if r.FieldsJSON != nil {
		// The column only ever holds what json.Marshal wrote.
		_ = json.Unmarshal([]byte(*r.FieldsJSON), &m.Fields)
	}
	return m
}

// ConversationQuery selects a page of an app's conversations.
type ConversationQuery struct {
	// Cursor is a NextCursor from the previous page.
	Cursor string
	Limit  int
	// Unanswered keeps only conversations with unanswered user messages.
	Unanswered bool
}

// ConversationPage is a page of conversations, newest activity first.
type ConversationPage struct {
	Data       []Conversation `json:"data"`
	NextCursor string         `json:"next_cursor"`
}

// knownApp returns the app with id, whether or not its platform can send.
func (s *Service) knownApp(id string) (*App, error) {
	a, ok := s.apps[id]
	if !ok {
		return nil, errAppNotFound
	}
	return a, nil
}

// Conversations lists an app's conversations, newest activity first.
func (s *Service) Conversations(ctx context.Context, appID string, q ConversationQuery) (*ConversationPage, error) {
	a, err := s.knownApp(appID)
	if err != nil {
		return nil, err
	}
	limit, after, afterOpenID, err := readPage(q.Limit, q.Cursor)
	if err != nil {
		return nil, err
	}
	var rows []conversationRow
	if err := s.db.SelectContext(ctx, &rows, ConversationList, a.ID, after, afterOpenID, q.Unanswered, limit); err != nil {
		return nil, fmt.Errorf("customerservice: list conversations: %w", err)
	}
	now, withWindow := s.now(), available(a) == nil
	page := &ConversationPage{Data: make([]Conversation, 0, len(rows))}
	for _, r := range rows {
		page.Data = append(page.Data, r.conversation(now, withWindow))
	}
	if len(rows) == limit {
		last := rows[len(rows)-1]
		page.NextCursor = encodeCursor(last.LastActivityAt, last.OpenID)
	}
	return page, nil
}

// conversation reads one conversation, or 404 conversation_not_found.
func (s *Service) conversation(ctx context.Context, appID, openid string) (*Conversation, error) {
	a, err := s.knownApp(appID)
	if err != nil {
		return nil, err
	}
	var row conversationRow
	err = s.db.GetContext(ctx, &row, ConversationGet, a.ID, openid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errConversationNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("customerservice: get conversation: %w", err)
	}
	c := row.conversation(s.now(), available(a) == nil)
	return &c, nil
}

// MessageQuery selects a page of a conversation's messages.
type MessageQuery struct {
	// Cursor is a NextCursor from the previous page (same Newest).
	Cursor string
	Limit  int
	// Newest lists newest first; the default is oldest first.
	Newest bool
}

// MessagePage is a page of one conversation's messages, both directions,
// in time order, with the conversation itself.
type MessagePage struct {
	Conversation *Conversation `json:"conversation"`
	Data         []Message     `json:"data"`
	NextCursor   string        `json:"next_cursor"`
}

// Messages lists the messages of the conversation with openid.
func (s *Service) Messages(ctx context.Context, appID, openid string, q MessageQuery) (*MessagePage, error) {
	conv, err := s.conversation(ctx, appID, openid)
	if err != nil {
		return nil, err
	}
	limit, after, afterID, err := readPage(q.Limit, q.Cursor)
	if err != nil {
		return nil, err
	}
	query := MessageListAsc
	if q.Newest {
		query = MessageListDesc
	}
	var rows []messageRow
	if err := s.db.SelectContext(ctx, &rows, query, conv.App, openid, after, afterID, limit); err != nil {
		return nil, fmt.Errorf("customerservice: list messages: %w", err)
	}
	page := &MessagePage{Conversation: conv, Data: make([]Message, 0, len(rows))}
	for _, r := range rows {
		page.Data = append(page.Data, r.message())
	}
	if len(rows) == limit {
		last := rows[len(rows)-1]
		page.NextCursor = encodeCursor(last.CreatedAt, last.ID)
	}
	return page, nil
}

// readPage reads a page request: its size, and from its cursor (if any)
// the time and tie-breaker of the previous page's last row.
func readPage(n int, cursor string) (limit int, after *time.Time, afterKey string, err error) {
	if limit, err = pageSize(n); err != nil || cursor == "" {
		return limit, nil, "", err
	}
	t, key, err := decodeCursor(cursor)
	if err != nil {
		return 0, nil, "", err
	}
	return limit, &t, key, nil
}

func pageSize(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultPageSize, nil
	case n < 1 || n > MaxPageSize:
		return 0, invalid("limit", "limit must be between 1 and %d", MaxPageSize)
	}
	return n, nil
}

// errBadCursor is answered for a cursor that no page handed out.
var errBadCursor = apperr.New(apperr.Invalid, "invalid_cursor", "cursor must be a next_cursor from a previous page").
	WithDetail("field", "cursor")

// encodeCursor makes an opaque keyset cursor from a time and a tie-breaker.
func encodeCursor(t time.Time, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(t.UTC().Format(time.RFC3339Nano) + "|" + key))
}

func decodeCursor(c string) (time.Time, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", errBadCursor
	}
	ts, key, ok := strings.Cut(string(raw), "|")
	if !ok || key == "" {
		return time.Time{}, "", errBadCursor
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, "", errBadCursor
	}
	return t, key, nil
}
