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
	// increment, $11 the activity time, $12 the receipt time. The receipt
	// times of the latest user message and session entry are kept too:
	// replies count against a reply window from then (platform times have
	// whole seconds only).
	ConversationTouchInbound = `
INSERT INTO conversations AS c (app, openid, last_message_id, last_message_type, last_message_preview, last_direction,
                                last_message_at, last_user_message_at, session_entered_at, unanswered,
                                last_activity_at, created_at, last_user_message_received_at, session_entered_received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
        CASE WHEN $8::timestamptz IS NOT NULL THEN $12::timestamptz END,
        CASE WHEN $9::timestamptz IS NOT NULL THEN $12::timestamptz END)
ON CONFLICT (app, openid) DO UPDATE SET
    last_message_id      = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_message_id ELSE c.last_message_id END,
    last_message_type    = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_message_type ELSE c.last_message_type END,
    last_message_preview = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_message_preview ELSE c.last_message_preview END,
    last_direction       = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_direction ELSE c.last_direction END,
    last_message_at      = CASE WHEN ` + incomingIsNewer + ` THEN EXCLUDED.last_message_at ELSE c.last_message_at END,
    last_user_message_at = GREATEST(c.last_user_message_at, EXCLUDED.last_user_message_at),
    session_entered_at   = GREATEST(c.session_entered_at, EXCLUDED.session_entered_at),
    last_user_message_received_at = CASE
        WHEN EXCLUDED.last_user_message_at >= c.last_user_message_at OR c.last_user_message_at IS NULL
        THEN COALESCE(EXCLUDED.last_user_message_received_at, c.last_user_message_received_at)
        ELSE c.last_user_message_received_at END,
    session_entered_received_at = CASE
        WHEN EXCLUDED.session_entered_at >= c.session_entered_at OR c.session_entered_at IS NULL
        THEN COALESCE(EXCLUDED.session_entered_received_at, c.session_entered_received_at)
        ELSE c.session_entered_received_at END,
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

// outboundCounted are the outbound statuses that use up a reply window:
// messages being sent, sent, and those whose outcome is unknown.
const outboundCounted = `('` + StatusSending + `', '` + StatusSent + `', '` + StatusUnknown + `')`

// SQL for sends, the conversation list and media.
const (
	// ConversationLockForSend locks a conversation and reads what its reply
	// window is computed from; sends to one user are serialised by it.
	ConversationLockForSend = `
SELECT last_user_message_at, session_entered_at, last_user_message_received_at, session_entered_received_at
FROM conversations WHERE app = $1 AND openid = $2 FOR UPDATE`

	// MessageCountReplies counts the outbound messages that use up the
	// window since the user's last message ($3) and since they entered
	// the session ($4), as received; either may be NULL.
	MessageCountReplies = `
SELECT count(*) FILTER (WHERE created_at >= $3::timestamptz) AS since_message,
       count(*) FILTER (WHERE created_at >= $4::timestamptz) AS since_session
FROM messages
WHERE app = $1 AND openid = $2 AND direction = 'out' AND status IN ` + outboundCounted + `
  AND created_at >= LEAST($3::timestamptz, $4::timestamptz)`

	// MessageInsertOutbound reserves an outbound message (status sending).
	MessageInsertOutbound = `
INSERT INTO messages (id, app, openid, direction, type, content, media_id, title, page_path, thumb_url,
                      thumb_media_id, description, url, status, sent_by, created_at, received_at)
VALUES ($1, $2, $3, 'out', $4, $5, $6, $7, $8, $9, $10, $11, $12, '` + StatusSending + `', $13, $14, $14)`

	// MessageFinishOutbound records a send's outcome; $6, when not empty,
	// is the media id of an image uploaded for the send.
	MessageFinishOutbound = `
UPDATE messages
SET status = $2, error_code = $3, error_message = $4, sent_at = $5,
    media_id = CASE WHEN $6 <> '' THEN $6 ELSE media_id END
WHERE id = $1 AND status = '` + StatusSending + `'
RETURNING ` + messageColumns

	// ConversationLock locks a conversation row.
	ConversationLock = `SELECT 1 FROM conversations WHERE app = $1 AND openid = $2 FOR UPDATE`

	// ConversationTouchOutbound makes a sent message the conversation's
	// last one (unless a newer message is already there) and recounts the
	// user's messages received after the reply was made ($4), which are
	// the unanswered ones.
	ConversationTouchOutbound = `
UPDATE conversations AS c SET
    last_message_id      = CASE WHEN ` + outgoingIsNewer + ` THEN $3 ELSE c.last_message_id END,
    last_message_type    = CASE WHEN ` + outgoingIsNewer + ` THEN $5 ELSE c.last_message_type END,
    last_message_preview = CASE WHEN ` + outgoingIsNewer + ` THEN $6 ELSE c.last_message_preview END,
    last_direction       = CASE WHEN ` + outgoingIsNewer + ` THEN 'out' ELSE c.last_direction END,
    last_message_at      = CASE WHEN ` + outgoingIsNewer + ` THEN $4 ELSE c.last_message_at END,
    unanswered           = (SELECT count(*) FROM messages m
                            WHERE m.app = c.app AND m.openid = c.openid AND m.direction = 'in'
                              AND m.type <> 'event' AND m.received_at > $4),
    last_activity_at     = GREATEST(c.last_activity_at, $4)
WHERE c.app = $1 AND c.openid = $2`

	// ConversationList lists an app's conversations, newest activity
	// first, after the keyset cursor ($2 activity time, $3 openid; NULL
	// for the first page), optionally only those with unanswered
	// messages ($4), with the counts their reply windows need.
	ConversationList = conversationSelect + `
WHERE c.app = $1
  AND ($2::timestamptz IS NULL OR c.last_activity_at < $2 OR (c.last_activity_at = $2 AND c.openid > $3))
  AND (NOT $4 OR c.unanswered > 0)
ORDER BY c.last_activity_at DESC, c.openid
LIMIT $5`

	// ConversationGet reads one conversation with its window counts.
	ConversationGet = conversationSelect + `
WHERE c.app = $1 AND c.openid = $2`

	// MessageListAsc lists a conversation's messages oldest first, after
	// the keyset cursor ($3 created_at, $4 id; NULL for the first page).
	MessageListAsc = `
SELECT ` + messageColumns + ` FROM messages
WHERE app = $1 AND openid = $2 AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
ORDER BY created_at, id
LIMIT $5`

	// MessageListDesc lists a conversation's messages newest first,
	// before the keyset cursor.
	MessageListDesc = `
SELECT ` + messageColumns + ` FROM messages
WHERE app = $1 AND openid = $2 AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
ORDER BY created_at DESC, id DESC
LIMIT $5`

	// MediaInsertUpload stores an image uploaded through minigate, with
	// its bytes.
	MediaInsertUpload = `
INSERT INTO media (app, media_id, origin, content_type, size, sha256, data, expires_at, created_at)
VALUES ($1, $2, 'upload', $3, $4, $5, $6, $7, $8)
ON CONFLICT (app, media_id) DO NOTHING`

	// MediaRegisterInbound remembers a media id a user sent, to be fetched
	// from the platform when first downloaded.
	MediaRegisterInbound = `
INSERT INTO media (app, media_id, origin, expires_at, created_at)
VALUES ($1, $2, 'inbound', $3, $4)
ON CONFLICT (app, media_id) DO NOTHING`

	// MediaGet reads a media row, with its bytes when cached.
	MediaGet = `
SELECT app, media_id, origin, content_type, size, sha256, data, expires_at, created_at
FROM media WHERE app = $1 AND media_id = $2`

	// MediaStoreFetched caches the bytes fetched from the platform, once.
	MediaStoreFetched = `
UPDATE media SET content_type = $3, size = $4, sha256 = $5, data = $6, fetched_at = $7
WHERE app = $1 AND media_id = $2 AND data IS NULL`

	// MediaPurgeExpired drops the cached bytes of a few of an app's
	// expired media (their rows stay, so their ids answer media_expired).
	MediaPurgeExpired = `
UPDATE media SET data = NULL
WHERE (app, media_id) IN (SELECT app, media_id FROM media
                          WHERE app = $1 AND expires_at <= $2 AND data IS NOT NULL
                          LIMIT 20)`
)

// messageColumns are the columns a Message is read from (fields as text).
const messageColumns = `id, app, openid, direction, type, event, content, media_id, pic_url, title, page_path,
    mp_app_id, thumb_url, thumb_media_id, session_from, fields::text AS fields, platform_msg_id, description, url,
    status, error_code, error_message, sent_by, sent_at, created_at, received_at`

// outgoingIsNewer holds when the sent message ($4) is at least as recent
// as the conversation's last message.
const outgoingIsNewer = `(c.last_message_at IS NULL OR $4 >= c.last_message_at)`

// conversationSelect reads conversations with the counts of window-using
// replies since the user's last message and since they entered the
// session (as received).
const conversationSelect = `
SELECT c.app, c.openid, c.last_message_id, c.last_message_type, c.last_message_preview, c.last_direction,
       c.last_message_at, c.last_user_message_at, c.session_entered_at, c.unanswered, c.last_activity_at,
       c.created_at, r.since_message, r.since_session
FROM conversations c
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE m.created_at >= c.last_user_message_received_at) AS since_message,
           count(*) FILTER (WHERE m.created_at >= c.session_entered_received_at) AS since_session
    FROM messages m
    WHERE m.app = c.app AND m.openid = c.openid AND m.direction = 'out' AND m.status IN ` + outboundCounted + `
      AND m.created_at >= LEAST(c.last_user_message_received_at, c.session_entered_received_at)) r`

func registerInboundMedia(ctx context.Context, tx *sqlx.Tx, app, mediaID string, expires, now time.Time) error {
	if mediaID == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, MediaRegisterInbound, app, mediaID, expires, now); err != nil {
		return fmt.Errorf("customerservice: register media: %w", err)
	}
	return nil
}
