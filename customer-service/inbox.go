// Package customerservice is minigate's customer-service inbox: one
// conversation per (app, user) with both directions of its messages, and
// what the reply windows are computed from (when the user last wrote, when
// they entered the session, how many of their messages are unanswered).
//
// Inbound messages arrive through the webhooks pipeline: Inbox implements
// webhooks.MessageSink and stores each accepted push in its conversation,
// and publishes message.received, inside the transaction that stores the
// callback.
//
// Outbound messages go through Service: it checks the platform's reply
// window (computed from the inbox, under a lock on the conversation row, so
// concurrent sends cannot both take the last slot), calls the platform's
// customer-service API (Platform, implemented by the adapters), records
// every send with its outcome, and serves the inbox, typing and media
// routes.
package customerservice

import (
	"context"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/ids"
	"github.com/minigate/minigate/webhooks"
)

// Message directions.
const (
	DirectionIn  = "in"
	DirectionOut = "out"
)

// Message statuses.
const (
	StatusReceived = "received"
	StatusSending  = "sending"
	StatusSent     = "sent"
	StatusFailed   = "failed"
	StatusUnknown  = "unknown"
)

// EventUserEnterSession is the push sent when a user opens the
// customer-service session.
const EventUserEnterSession = "user_enter_tempsession"

// previewRunes bounds a conversation's last-message preview.
const previewRunes = 80

// knownTypes are the message types mapped onto columns; pushes of other
// types (and events other than entering the session) also carry their
// parsed fields in the message.received event.
var knownTypes = map[string]bool{"text": true, "image": true, "miniprogrampage": true}

// Inbox writes inbound messages into conversations.
type Inbox struct {
	events events.Publisher
	now    func() time.Time
}

// NewInbox returns an Inbox publishing message.received through pub. now
// stamps received_at; nil means time.Now.
func NewInbox(pub events.Publisher, now func() time.Time) *Inbox {
	if now == nil {
		now = time.Now
	}
	return &Inbox{events: pub, now: now}
}

// Message is one message of a conversation, in either direction.
type Message struct {
	ID            string         `json:"id" db:"id"`
	App           string         `json:"app" db:"app"`
	OpenID        string         `json:"openid" db:"openid"`
	Direction     string         `json:"direction" db:"direction"`
	Type          string         `json:"type" db:"type"`
	Event         string         `json:"event,omitempty" db:"event"`
	Content       string         `json:"content,omitempty" db:"content"`
	MediaID       string         `json:"media_id,omitempty" db:"media_id"`
	PicURL        string         `json:"pic_url,omitempty" db:"pic_url"`
	Title         string         `json:"title,omitempty" db:"title"`
	PagePath      string         `json:"page_path,omitempty" db:"page_path"`
	AppID         string         `json:"app_id,omitempty" db:"mp_app_id"`
	ThumbURL      string         `json:"thumb_url,omitempty" db:"thumb_url"`
	ThumbMediaID  string         `json:"thumb_media_id,omitempty" db:"thumb_media_id"`
	SessionFrom   string         `json:"session_from,omitempty" db:"session_from"`
	PlatformMsgID string         `json:"platform_msg_id,omitempty" db:"platform_msg_id"`
	Fields        map[string]any `json:"fields,omitempty" db:"-"`
	// Description and URL complete an outbound link.
	Description string `json:"description,omitempty" db:"description"`
	URL         string `json:"url,omitempty" db:"url"`
	// Status is "received" for inbound messages; outbound ones move from
	// "sending" to "sent", "failed" (ErrorCode: the platform's code, or
	// minigate's reason when the platform gave none) or "unknown" (the
	// platform did not answer in time).
	Status       string `json:"status" db:"status"`
	ErrorCode    string `json:"error_code,omitempty" db:"error_code"`
	ErrorMessage string `json:"error_message,omitempty" db:"error_message"`
	// SentBy names the API key that sent an outbound message.
	SentBy string `json:"sent_by,omitempty" db:"sent_by"`
	// SentAt is when the platform accepted an outbound message.
	SentAt     *time.Time `json:"sent_at,omitempty" db:"sent_at"`
	CreatedAt  time.Time  `json:"created_at" db:"created_at"`
	ReceivedAt time.Time  `json:"received_at" db:"received_at"`
}

// ReceivedData is the data of a message.received event.
type ReceivedData struct {
	App     string  `json:"app"`
	OpenID  string  `json:"openid"`
	Message Message `json:"message"`
}

// ReceiveMessage implements webhooks.MessageSink: it stores msg as an
// inbound message, updates its conversation and publishes
// message.received, all in tx.
func (in *Inbox) ReceiveMessage(ctx context.Context, tx *sqlx.Tx, cb webhooks.Callback, msg *webhooks.Message) error {
	m := inboundMessage(cb, msg, in.now())
	if err := insertInbound(ctx, tx, m, cb.ID); err != nil {
		return err
	}
	if err := touchConversation(ctx, tx, m); err != nil {
		return err
	}
	// The images a user sends can be downloaded through GET
	// /v1/apps/{app}/media/{media_id} until the platform forgets them.
	for _, id := range []string{m.MediaID, m.ThumbMediaID} {
		if err := registerInboundMedia(ctx, tx, m.App, id, m.CreatedAt.Add(MediaTTL), m.ReceivedAt); err != nil {
			return err
		}
	}
	if _, err := in.events.Publish(ctx, tx, events.TypeMessageReceived, ReceivedData{App: m.App, OpenID: m.OpenID, Message: m}); err != nil {
		return fmt.Errorf("customerservice: receive message: %w", err)
	}
	return nil
}

// inboundMessage maps a verified push onto an inbox message. Text is made
// storable (webhooks.CleanText); the platform's CreateTime is the message
// time (refined to the receipt time within its second), or the receipt
// time when absent.
func inboundMessage(cb webhooks.Callback, msg *webhooks.Message, now time.Time) Message {
	c := webhooks.CleanText
	m := Message{
		ID: ids.New("msg"), App: cb.App, OpenID: c(msg.FromUserName), Direction: DirectionIn,
		Type: c(msg.MsgType), Event: c(msg.Event), Content: c(msg.Content),
		MediaID: c(msg.MediaID), PicURL: c(msg.PicURL), Title: c(msg.Title), PagePath: c(msg.PagePath),
		AppID: c(msg.AppID), ThumbURL: c(msg.ThumbURL), ThumbMediaID: c(msg.ThumbMediaID),
		SessionFrom: c(msg.SessionFrom), Status: StatusReceived, ReceivedAt: now.UTC().Truncate(time.Microsecond),
	}
	if msg.MsgID != 0 {
		m.PlatformMsgID = strconv.FormatInt(msg.MsgID, 10)
	} else if msg.DedupKey != "" {
		m.PlatformMsgID = c(msg.DedupKey)
	}
	if m.Type == "" {
		m.Type = "unknown"
	}
	m.CreatedAt = m.ReceivedAt
	if msg.CreateTime > 0 {
		m.CreatedAt = time.Unix(msg.CreateTime, 0).UTC()
		// CreateTime has whole seconds only. A push received within its
		// second was written no later than its receipt, so the receipt
		// time is the better estimate: it orders the message correctly
		// against replies made in the same second.
		if d := m.ReceivedAt.Sub(m.CreatedAt); d >= 0 && d < time.Second {
			m.CreatedAt = m.ReceivedAt
		}
	}
	if !isKnown(m) {
		m.Fields = msg.Fields
	}
	return m
}

func isKnown(m Message) bool {
	if m.Type == "event" {
		return m.Event == EventUserEnterSession
	}
	return knownTypes[m.Type]
}

// isUserMessage reports whether m is something the user wrote (events are
// not): it counts as unanswered and opens the reply window.
func isUserMessage(m Message) bool { return m.Direction == DirectionIn && m.Type != "event" }

// preview is the conversation list's one-line summary of m.
func preview(m Message) string {
	switch m.Type {
	case "text":
		return truncateRunes(m.Content, previewRunes)
	case "image":
		return "[image]"
	case "miniprogrampage":
		return truncateRunes("[miniprogrampage] "+m.Title, previewRunes)
	default:
		return "[" + m.Type + "]"
	}
}

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
