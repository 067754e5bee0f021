package customerservice

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// SQL for the inbox.
const (
	// MessageInsertInbound stores an inbound message.
	MessageInsertInbound = `
INSERT INTO messages (id, app, openid, direction, type, event, content, media_id, pic_url, title, page_path,
                      mp_app_id, thumb_url, thumb_media_id, session_from, fields, platform_msg_id, callback_id,
                      created_at, received_at)
VALUES ($1, $2, $3, 'in', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`

	// ConversationTouchInbound creates or updates a conversation for an
	// inbound message or event. $3..$7 (the last message) are NULL for
	// events, which do not replace the last message; a message older than
	// the current last one (a late retry) does not replace it either.
	// $8 is the user-message time (NULL for events), $9 the session-entered
	// time (NULL unless the user entered the session), $10 the unanswered
	// increment, $11 the activity time.
	ConversationTouchInbound = `
INSERT INTO conversations AS c (app, openid, last_message_id, last_message_type, last_message_preview, last_direction,
                                last_message_at, last_user_message_at, session_entered_at, unanswered,
                                last_activity_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (app, openid) DO UPDATE SET
    last_message_id      = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_message_id ELSE c.last_message_id END,
    last_message_type    = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_message_type ELSE c.last_message_type END,
    last_message_preview = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_message_preview ELSE c.last_message_preview END,
    last_direction       = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_direction ELSE c.last_direction END,
    last_message_at      = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_message_at ELSE c.last_message_at END,
    last_user_message_at = GREATEST(c.last_user_message_at, EXCLUDED.last_user_message_at),
    session_entered_at   = GREATEST(c.session_entered_at, EXCLUDED.session_entered_at),
    unanswered           = c.unanswered + EXCLUDED.unanswered,
    last_activity_at     = GREATEST(c.last_activity_at, EXCLUDED.last_activity_at)`
)

// incomingIsNewer holds when the incoming row carries a message at least
// as recent as the conversation's last one.
const incomingIsNewer = `(EXCLUDED.last_message_at IS NOT NULL AND (c.last_message_at IS NULL OR EXCLUDED.last_message_at >= c.last_message_at))`

func insertInbound(ctx context.Context, tx *sqlx.Tx, m Message, callbackID int64) error {
	var fields *string
	if m.Fields != nil {
		b, err := json.Marshal(m.Fields)
		if err != nil {
			return fmt.Errorf("customerservice: encode message fields: %w", err)
		}
		s := string(b)
		fields = &s
	}
	_, err := tx.ExecContext(ctx, MessageInsertInbound,
		m.ID, m.App, m.OpenID, m.Type, m.Event, m.Content, m.MediaID, m.PicURL, m.Title, m.PagePath,
		m.AppID, m.ThumbURL, m.ThumbMediaID, m.SessionFrom, fields, m.PlatformMsgID, callbackID,
		m.CreatedAt, m.ReceivedAt)
	if err != nil {
		return fmt.Errorf("customerservice: store message: %w", err)
	}
	return nil
}

func touchConversation(ctx context.Context, tx *sqlx.Tx, m Message) error {
	var (
		lastID, lastType, lastPreview, lastDir *string
		lastAt, userAt, enteredAt              *time.Time
		unanswered                             int
	)
	if isUserMessage(m) {
		p, d := preview(m), m.Direction
		lastID, lastType, lastPreview, lastDir = &m.ID, &m.Type, &p, &d
		lastAt, userAt = &m.CreatedAt, &m.CreatedAt
		unanswered = 1
	}
	if m.Type == "event" && m.Event == EventUserEnterSession {
		enteredAt = &m.CreatedAt
	}
	_, err := tx.ExecContext(ctx, ConversationTouchInbound,
		m.App, m.OpenID, lastID, lastType, lastPreview, lastDir, lastAt, userAt, enteredAt, unanswered,
		m.CreatedAt, m.ReceivedAt)
	if err != nil {
		return fmt.Errorf("customerservice: update conversation: %w", err)
	}
	return nil
}
