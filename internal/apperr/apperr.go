// Package apperr defines the typed errors that domain packages return and the
// HTTP layer turns into the contract's error shape:
//
//	{"error": {"code": "snake_case_code", "message": "…"}}
//
// The Kind decides the HTTP status; the Code is the stable, machine-readable
// name clients branch on.
package apperr

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error; each kind maps to one HTTP status.
type Kind int

// The kinds of error, with the HTTP status each maps to.
const (
	Internal        Kind = iota // 500
	Invalid                     // 400
	Unauthenticated             // 401
	Forbidden                   // 403
	NotFound                    // 404
	Conflict                    // 409
	TooLarge                    // 413
	Rejected                    // 422: the platform refused the request
	RateLimited                 // 429
	Unsupported                 // 501
	Unavailable                 // 502: platform unreachable or busy, retryable
	Timeout                     // 504: platform did not answer in time, retryable
	NotReady                    // 503: something is not ready yet, retry later
)

// Status returns the HTTP status for the kind.
func (k Kind) Status() int {
	switch k {
	case Invalid:
		return 400
	case Unauthenticated:
		return 401
	case Forbidden:
		return 403
	case NotFound:
		return 404
	case Conflict:
		return 409
	case TooLarge:
		return 413
	case Rejected:
		return 422
	case RateLimited:
		return 429
	case Unsupported:
		return 501
	case Unavailable:
		return 502
	case NotReady:
		return 503
	case Timeout:
		return 504
	default:
		return 500
	}
}

// Error is an error with a kind, a stable code and a human message.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	// Details are extra fields merged into the error object (optional).
	Details map[string]any
	// RetryAfter, when set, is sent as a Retry-After header.
	RetryAfter time.Duration
	// Err is the underlying cause; never shown to clients.
	Err error
}

// New returns an error of the given kind and code.
func New(kind Kind, code, message string) *Error {
	return &Error{Kind: kind, Code: code, Message: message}
}

// Newf is New with a formatted message.
func Newf(kind Kind, code, format string, args ...any) *Error {
	return New(kind, code, fmt.Sprintf(format, args...))
}

// Wrap returns an error of the given kind and code caused by err.
func Wrap(err error, kind Kind, code, message string) *Error {
	return &Error{Kind: kind, Code: code, Message: message, Err: err}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code, so sentinel
// *Errors can be matched with errors.Is even after WithDetail copies.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// WithDetail returns a copy of e with one more detail field.
func (e *Error) WithDetail(key string, value any) *Error {
	c := *e
	c.Details = make(map[string]any, len(e.Details)+1)
	for k, v := range e.Details {
		c.Details[k] = v
	}
	c.Details[key] = value
	return &c
}

// WithCause returns a copy of e caused by err.
func (e *Error) WithCause(err error) *Error {
	c := *e
	c.Err = err
	return &c
}

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// KindOf returns the kind of the *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	if e, ok := As(err); ok {
		return e.Kind
	}
	return Internal
}
