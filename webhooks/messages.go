package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gofiber/fiber/v2"
	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/metrics"
)

// OutcomeURLVerified is the metrics.Callbacks outcome of a successful GET
// URL verification.
const OutcomeURLVerified = "url_verified"

// MessageSink receives accepted message pushes inside the transaction that
// stores the callback, once per de-duplication key. customerservice's
// inbox implements it (conversation, message, message.received event).
type MessageSink interface {
	ReceiveMessage(ctx context.Context, tx *sqlx.Tx, cb Callback, msg *Message) error
}

// ErrUnknownApp is returned for a callback to an app that is not
// configured, or that has no message push settings.
var ErrUnknownApp = apperr.New(apperr.NotFound, "unknown_app", "no such app, or message push is not configured for it")

// EventRoute handles the pushes of one event (MsgType event, Event name)
// of one app in place of the MessageSink: an adapter reads the push into a
// domain's payload (Open), the domain applies it (Apply), and the push is
// answered in the event's own format (Ack). Domains whose platform events
// arrive as message pushes — WeChat virtual payment results, shipping
// events — add routes; the pipeline itself does not change.
type EventRoute struct {
	// Open reads a verified push of the event: its identity for the
	// pipeline (DedupKey, EventType, Summary, Stored: empty ones are
	// derived as for every push) and the Payload handed to Apply. A push
	// that cannot be read is a *VerifyError.
	Open func(msg *Message) (Opened[any], error)
	// Apply is the domain's effect, with the rules of Spec.Apply.
	Apply func(ctx context.Context, tx *sqlx.Tx, cb Callback, payload any) error
	// Ack is the event's "received" reply; the zero Reply means the
	// verifier's.
	Ack Reply
}

// EventRoutes are the routed events of each app: minigate app id → event
// name → route.
type EventRoutes map[string]map[string]EventRoute

// RouteEvent makes an EventRoute from an adapter's typed reading of the
// push and a domain's typed effect.
func RouteEvent[T any](open func(*Message) (Opened[T], error), apply func(context.Context, *sqlx.Tx, Callback, T) error, ack Reply) EventRoute {
	return EventRoute{
		Open: func(msg *Message) (Opened[any], error) {
			o, err := open(msg)
			if err != nil {
				return Opened[any]{}, err
			}
			return Opened[any]{DedupKey: o.DedupKey, EventType: o.EventType, Summary: o.Summary,
				Payload: o.Payload, Stored: o.Stored, Ack: o.Ack}, nil
		},
		Apply: func(ctx context.Context, tx *sqlx.Tx, cb Callback, payload any) error {
			p, ok := payload.(T)
			if !ok {
				return fmt.Errorf("webhooks: routed event payload of type %T", payload)
			}
			return apply(ctx, tx, cb, p)
		},
		Ack: ack,
	}
}

// push is what a message channel opens: the message and, for a routed
// event, its route and payload.
type push struct {
	msg     *Message
	route   *EventRoute
	payload any
}

// Messages serves the message-push callbacks, GET (URL verification) and
// POST (pushes), for every app with a MessageVerifier.
type Messages struct {
	pipeline  *Pipeline
	verifiers map[string]MessageVerifier
	specs     map[string]Spec[*push]
}

// NewMessages returns the message-callback handlers. verifiers maps
// minigate app ids to their platform's verifier; sink stores what is
// accepted; routes send some apps' events elsewhere (nil: none). Each
// app's channel is assembled here, once: a push then goes through the
// adapter (open), the pipeline (store) and the sink or its event's route
// (apply), in that order, and is answered with the adapter's reply or the
// route's.
func NewMessages(p *Pipeline, verifiers map[string]MessageVerifier, sink MessageSink, routes EventRoutes) *Messages {
	m := &Messages{pipeline: p, verifiers: map[string]MessageVerifier{}, specs: map[string]Spec[*push]{}}
	for app, v := range verifiers {
		if v == nil {
			continue
		}
		m.verifiers[app] = v
		m.specs[app] = Spec[*push]{
			App:  app,
			Kind: KindMessages,
			Open: openPush(v, routes[app]),
			Apply: func(ctx context.Context, tx *sqlx.Tx, cb Callback, p *push) error {
				if p.route != nil {
					return p.route.Apply(ctx, tx, cb, p.payload)
				}
				return sink.ReceiveMessage(ctx, tx, cb, p.msg)
			},
			Ack: v.Ack(),
		}
	}
	return m
}

// openPush is a message channel's Open step: the adapter verifies,
// decrypts and parses; the pipeline identifies the push (OpenedMessage),
// or the event's route reads it.
func openPush(v MessageVerifier, routes map[string]EventRoute) func(context.Context, Request) (Opened[*push], error) {
	return func(_ context.Context, req Request) (Opened[*push], error) {
		msg, err := v.OpenMessage(req)
		if err != nil {
			return Opened[*push]{}, err
		}
		if msg == nil {
			return Opened[*push]{}, errors.New("webhooks: verifier returned no message")
		}
		base := OpenedMessage(msg)
		if base.Stored == nil {
			base.Stored = msg
		}
		route, ok := routes[msg.Event]
		if msg.MsgType != "event" || !ok {
			return Opened[*push]{DedupKey: base.DedupKey, EventType: base.EventType, Summary: base.Summary,
				Payload: &push{msg: msg}, Stored: base.Stored}, nil
		}
		o, err := route.Open(msg)
		if err != nil {
			return Opened[*push]{}, err
		}
		out := Opened[*push]{DedupKey: o.DedupKey, EventType: o.EventType, Summary: o.Summary,
			Payload: &push{msg: msg, route: &route, payload: o.Payload}, Stored: o.Stored, Ack: o.Ack}
		if out.DedupKey == "" {
			out.DedupKey = base.DedupKey
		}
		if out.EventType == "" {
			out.EventType = base.EventType
		}
		if out.Summary == nil {
			out.Summary = base.Summary
		}
		if out.Stored == nil {
			out.Stored = base.Stored
		}
		if out.Ack == nil && route.Ack.Status != 0 {
			ack := route.Ack
			out.Ack = &ack
		}
		return out, nil
	}
}

// Mount registers GET and POST /callbacks/:app/messages on r.
func (m *Messages) Mount(r fiber.Router) {
	r.Get("/callbacks/:app/messages", m.verifyURL)
	r.Post("/callbacks/:app/messages", m.receive)
}

func (m *Messages) verifier(c *fiber.Ctx) (string, MessageVerifier, error) {
	app := c.Params("app")
	v, ok := m.verifiers[app]
	if !ok {
		return "", nil, ErrUnknownApp
	}
	return app, v, nil
}

// verifyURL answers the platform's URL verification: the echostr for a
// valid signature, a 4xx (and a rejected_callbacks row) otherwise.
func (m *Messages) verifyURL(c *fiber.Ctx) error {
	app, v, err := m.verifier(c)
	if err != nil {
		return err
	}
	p := m.pipeline
	req := NewRequest(c, p.opts.Now())
	echo, err := v.VerifyURL(req)
	if err != nil {
		ve, ok := AsVerifyError(err)
		if !ok {
			ve = Reject(RejectMalformed, "url verification: %v", err)
		}
		return Send(c, p.refuse(c.UserContext(), app, KindMessages, req, ve, nil))
	}
	metrics.Callbacks.WithLabelValues(app, string(KindMessages), OutcomeURLVerified).Inc()
	return Send(c, TextReply(http.StatusOK, echo))
}

func (m *Messages) receive(c *fiber.Ctx) error {
	spec, ok := m.specs[c.Params("app")]
	if !ok {
		return ErrUnknownApp
	}
	return Handle(m.pipeline, c, spec)
}

// OpenedMessage identifies a verified message push for the pipeline: its
// de-duplication key, event type, personal-data-free summary, and the
// stored payload (every field as parsed).
func OpenedMessage(msg *Message) Opened[*Message] {
	o := Opened[*Message]{
		DedupKey:  MessageDedupKey(msg),
		EventType: MessageEventType(msg),
		Summary:   MessageSummary(msg),
		Payload:   msg,
	}
	if msg.Fields != nil {
		o.Stored = msg.Fields
	}
	return o
}

// MessageDedupKey identifies a push across the platform's retries: the
// verifier's DedupKey when set, else MsgId, else FromUserName+CreateTime+
// Event for events, else a digest of every field (pushes without any id).
func MessageDedupKey(msg *Message) string {
	switch {
	case msg.DedupKey != "":
		return "id:" + msg.DedupKey
	case msg.MsgID != 0:
		return "msg:" + strconv.FormatInt(msg.MsgID, 10)
	case msg.MsgType == "event":
		return "evt:" + msg.FromUserName + "|" + strconv.FormatInt(msg.CreateTime, 10) + "|" + msg.Event
	}
	b, err := json.Marshal(msg.Fields) // maps marshal with sorted keys: canonical
	if msg.Fields == nil || err != nil {
		b, _ = json.Marshal(msg) // a struct of strings and integers always encodes
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// MessageEventType names a push for the callbacks table: the MsgType, and
// for events "event." plus the event name.
func MessageEventType(msg *Message) string {
	if msg.MsgType == "event" && msg.Event != "" {
		return "event." + msg.Event
	}
	if msg.MsgType == "" {
		return "unknown"
	}
	return msg.MsgType
}

// MessageSummary describes a push without personal data (no openid, no
// content): for logs and the callbacks table.
func MessageSummary(msg *Message) map[string]any {
	s := map[string]any{"msg_type": msg.MsgType, "create_time": msg.CreateTime}
	if msg.Event != "" {
		s["event"] = msg.Event
	}
	if msg.MsgID != 0 {
		s["msg_id"] = msg.MsgID
	}
	if msg.Content != "" {
		s["content_bytes"] = len(msg.Content)
	}
	return s
}
