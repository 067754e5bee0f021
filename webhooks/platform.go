// Package webhooks receives platform callbacks — message pushes and payment
// notifications — through one pipeline, in a fixed order: bound the body →
// verify the signature → decrypt → identify → store and de-duplicate in one
// transaction (with the domain's state change and its event jobs) → reply in
// the platform's format. Only the small steps differ per platform; they are
// the adapters' MessageVerifier and the orders package's payment
// notification parser. Callbacks that fail verification change nothing and
// are kept, bounded, in rejected_callbacks with the reason.
package webhooks

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Request is an inbound callback as received. Body is a copy owned by the
// request (Fiber reuses its buffers).
type Request struct {
	Method     string
	Query      url.Values
	Header     http.Header
	Body       []byte
	RemoteAddr string
	ReceivedAt time.Time
}

// Reply is what minigate answers a platform.
type Reply struct {
	Status      int
	ContentType string
	Body        []byte
}

// RejectReason says why a callback was refused.
type RejectReason string

// Reasons a callback fails verification.
const (
	RejectMissingSignature RejectReason = "missing_signature"
	RejectBadSignature     RejectReason = "bad_signature"
	RejectBadMsgSignature  RejectReason = "bad_msg_signature"
	RejectStaleTimestamp   RejectReason = "stale_timestamp"
	RejectBadCiphertext    RejectReason = "bad_ciphertext"
	RejectUnencrypted      RejectReason = "unencrypted"
	RejectForeignApp       RejectReason = "foreign_app"
	RejectForeignMerchant  RejectReason = "foreign_merchant"
	RejectMalformed        RejectReason = "malformed"
	RejectUnsupported      RejectReason = "unsupported"
	// RejectTooLarge is set by the pipeline for bodies over the limit.
	RejectTooLarge RejectReason = "body_too_large"
)

// VerifyError is returned by verifiers for callbacks that must not be
// trusted. Detail is for operators (stored with the rejected callback) and
// must not contain secrets.
type VerifyError struct {
	Reason RejectReason
	Detail string
}

// Error implements error; it names the reason and the operator detail.
func (e *VerifyError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("webhooks: rejected: %s", e.Reason)
	}
	return fmt.Sprintf("webhooks: rejected: %s: %s", e.Reason, e.Detail)
}

// Reject returns a *VerifyError.
func Reject(reason RejectReason, format string, args ...any) *VerifyError {
	return &VerifyError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// AsVerifyError returns the *VerifyError in err's chain, if any.
func AsVerifyError(err error) (*VerifyError, bool) {
	var ve *VerifyError
	ok := errors.As(err, &ve)
	return ve, ok
}

// Message is a verified, decrypted message push, in WeChat's field names
// (JSON pushes use the same names; Alipay messages are mapped onto them).
type Message struct {
	ToUserName   string `json:"ToUserName"`
	FromUserName string `json:"FromUserName"` // the user's openid
	CreateTime   int64  `json:"CreateTime"`
	MsgType      string `json:"MsgType"` // text, image, miniprogrampage, event, …
	Event        string `json:"Event,omitempty"`
	MsgID        int64  `json:"MsgId,omitempty"`
	Content      string `json:"Content,omitempty"`
	PicURL       string `json:"PicUrl,omitempty"`
	MediaID      string `json:"MediaId,omitempty"`
	Title        string `json:"Title,omitempty"`
	AppID        string `json:"AppId,omitempty"`
	PagePath     string `json:"PagePath,omitempty"`
	ThumbURL     string `json:"ThumbUrl,omitempty"`
	ThumbMediaID string `json:"ThumbMediaId,omitempty"`
	SessionFrom  string `json:"SessionFrom,omitempty"`
	// DedupKey, when a verifier sets it, identifies the push across the
	// platform's retries; set it for platforms whose pushes carry an id
	// other than MsgId (Alipay's notify_id / msg id). When empty,
	// MessageDedupKey derives the key from MsgId, or from
	// FromUserName+CreateTime+Event for events.
	DedupKey string `json:"-"`
	// Fields holds every field of the plaintext message as parsed, so
	// unknown types and events are stored as they came.
	Fields map[string]any `json:"-"`
}

// MessageVerifier checks and opens one app's message pushes. Failures that
// mean "not provably from the platform" are *VerifyError.
type MessageVerifier interface {
	// VerifyURL checks a GET URL-verification request and returns the
	// string to echo.
	VerifyURL(req Request) (string, error)
	// OpenMessage verifies (signature, msg_signature, timestamp window),
	// decrypts (checking the app id inside the plaintext) and parses a push.
	OpenMessage(req Request) (*Message, error)
	// Ack is the platform's "received" reply ("success" for WeChat/QQ).
	Ack() Reply
}
