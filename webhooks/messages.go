package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// Messages serves the message-push callbacks, GET (URL verification) and
// POST (pushes), for every app with a MessageVerifier.
type Messages struct {
	pipeline  *Pipeline
	verifiers map[string]MessageVerifier
	specs     map[string]Spec[*Message]
}

// NewMessages returns the message-callback handlers. verifiers maps
// minigate app ids to their platform's verifier; sink stores what is
// accepted. Each app's channel is assembled here, once: a push then goes
// through the adapter (open), the pipeline (store) and the sink (apply),
// in that order, and is answered with the adapter's reply.
func NewMessages(p *Pipeline, verifiers map[string]MessageVerifier, sink MessageSink) *Messages {
	m := &Messages{pipeline: p, verifiers: map[string]MessageVerifier{}, specs: map[string]Spec[*Message]{}}
	for app, v := range verifiers {
		if v == nil {
			continue
		}
		m.verifiers[app] = v
		m.specs[app] = Spec[*Message]{
			App:   app,
			Kind:  KindMessages,
			Open:  openMessage(v),
			Apply: sink.ReceiveMessage,
			Ack:   v.Ack(),
		}
	}
	return m
}

// openMessage is a message channel's Open step: the adapter verifies,
// decrypts and parses; the pipeline identifies the push (OpenedMessage).
func openMessage(v MessageVerifier) func(context.Context, Request) (Opened[*Message], error) {
	return func(_ context.Context, req Request) (Opened[*Message], error) {
		msg, err := v.OpenMessage(req)
		if err != nil {
			return Opened[*Message]{}, err
		}
		if msg == nil {
			return Opened[*Message]{}, errors.New("webhooks: verifier returned no message")
		}
		return OpenedMessage(msg), nil
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
