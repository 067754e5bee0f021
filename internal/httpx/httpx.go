// Package httpx builds minigate's Fiber application: request ids, structured
// access logs, metrics, a body limit, panic recovery and the contract's JSON
// error shape. Domain packages register thin handlers on the returned app.
package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/gofiber/fiber/v2/middleware/requestid"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/ids"
	"github.com/minigate/minigate/internal/metrics"
)

// Options configures New.
type Options struct {
	// BodyLimit bounds request bodies (bytes).
	BodyLimit int
	// ReadTimeout bounds reading a request; zero means 30s.
	ReadTimeout time.Duration
	// Logger receives access and error logs.
	Logger *slog.Logger
	// Components tags the access lines of requests whose path starts with
	// a key with "component": value (sandbox mode's simulator is served
	// under /sandbox/ beside minigate's own routes).
	Components map[string]string
}

// Locals keys.
const (
	// requestIDLocal holds the request id.
	requestIDLocal = "requestid"
	// accessLogLocal is set while the access log middleware runs: the
	// error handler then leaves an error's cause in causeLocal for the
	// request's one access line instead of logging a line of its own.
	accessLogLocal = "httpx.accesslog"
	causeLocal     = "httpx.cause"
)

// New returns a Fiber app with minigate's middleware and error handler.
func New(opts Options) *fiber.App {
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 30 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	app := fiber.New(fiber.Config{
		BodyLimit:             opts.BodyLimit,
		ReadTimeout:           opts.ReadTimeout,
		WriteTimeout:          opts.ReadTimeout,
		IdleTimeout:           2 * time.Minute,
		DisableStartupMessage: true,
		ErrorHandler:          ErrorHandler(log),
		// Immutable: values from c.Params, c.Query, c.Get … are copies, so
		// they stay valid when kept beyond the handler (jobs, maps, logs).
		// Fiber otherwise hands out strings aliasing reused buffers.
		Immutable: true,
	})
	app.Use(requestid.New(requestid.Config{
		Generator:  func() string { return ids.New("req") },
		ContextKey: requestIDLocal,
	}))
	app.Use(accessLog(log, opts.Components))
	// Inside the access log, so a panic is logged on its request's line.
	app.Use(recover.New())
	return app
}

// RequestID returns the request's id.
func RequestID(c *fiber.Ctx) string {
	s, _ := c.Locals(requestIDLocal).(string)
	return s
}

// accessLog logs one line per request: INFO for answers (client errors and
// 501 unsupported_by_platform included: they are expected outcomes, told
// to the client), WARN for a platform that failed minigate (502, 504),
// ERROR for minigate's own failures (500, 503), with the error's cause.
func accessLog(log *slog.Logger, components map[string]string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		c.Locals(accessLogLocal, true)
		start := time.Now()
		own := c.Route() // this middleware's route: still current after Next when nothing matched
		err := c.Next()
		status := c.Response().StatusCode()
		if err != nil {
			// Let the error handler write the response now so the
			// status we record is the one sent.
			if herr := c.App().ErrorHandler(c, err); herr != nil {
				_ = c.SendStatus(fiber.StatusInternalServerError)
			}
			status = c.Response().StatusCode()
		}
		route := "unmatched"
		if r := c.Route(); r != own {
			route = r.Path // the pattern, e.g. /v1/orders/:id
		}
		elapsed := time.Since(start)
		metrics.HTTPRequests.WithLabelValues(route, c.Method(), strconv.Itoa(status)).Inc()
		metrics.HTTPDuration.WithLabelValues(route, c.Method()).Observe(elapsed.Seconds())
		// Path only: query strings can carry signatures and tokens.
		args := []any{"request_id", RequestID(c), "method", c.Method(), "path", c.Path(),
			"route", route, "status", status, "duration_ms", float64(elapsed.Microseconds()) / 1000}
		if cause, ok := c.Locals(causeLocal).(error); ok {
			args = append(args, "err", cause)
		}
		for prefix, name := range components {
			if strings.HasPrefix(c.Path(), prefix) {
				args = append(args, "component", name)
				break
			}
		}
		log.Log(c.UserContext(), statusLevel(status), "http request", args...)
		return nil
	}
}

// statusLevel is the access-log level of a response status.
func statusLevel(status int) slog.Level {
	switch {
	case status < 500 || status == fiber.StatusNotImplemented:
		return slog.LevelInfo
	case status == fiber.StatusBadGateway || status == fiber.StatusGatewayTimeout:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// ErrorBody is the contract's error shape.
type ErrorBody struct {
	Error ErrorObject `json:"error"`
}

// ErrorObject is the inside of ErrorBody.
type ErrorObject struct {
	Code      string         `json:"code"`
	Message   string         `json:"message"`
	RequestID string         `json:"request_id,omitempty"`
	Details   map[string]any `json:"details,omitempty"`
}

// ErrorHandler maps errors to the contract's JSON error responses. Unknown
// errors become 500 internal_error; their text is never sent to the client.
// The cause of a server-side failure (5xx but 501) is logged once, with
// the request id: on the request's access line, or on a line of its own
// outside the access log.
func ErrorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		body := ErrorBody{Error: ErrorObject{RequestID: RequestID(c)}}
		status := fiber.StatusInternalServerError
		var cause error
		var fe *fiber.Error
		if ae, ok := apperr.As(err); ok {
			status = ae.Kind.Status()
			body.Error.Code, body.Error.Message, body.Error.Details = ae.Code, ae.Message, ae.Details
			if ae.RetryAfter > 0 {
				c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(ae.RetryAfter.Seconds()+0.5)))
			}
			if status >= 500 && status != fiber.StatusNotImplemented && ae.Err != nil {
				cause = fmt.Errorf("%s: %w", ae.Code, ae.Err)
			}
		} else if errors.As(err, &fe) {
			status = fe.Code
			body.Error.Code, body.Error.Message = fiberCode(fe.Code), fe.Message
		} else {
			body.Error.Code, body.Error.Message = "internal_error", "internal error"
			cause = err
		}
		if cause != nil {
			if logged, _ := c.Locals(accessLogLocal).(bool); logged {
				c.Locals(causeLocal, cause)
			} else {
				log.Log(c.UserContext(), statusLevel(status), "request failed", "request_id", body.Error.RequestID, "err", cause)
			}
		}
		return c.Status(status).JSON(body)
	}
}

func fiberCode(status int) string {
	switch status {
	case fiber.StatusRequestEntityTooLarge:
		return "body_too_large"
	case fiber.StatusNotFound:
		return "not_found"
	case fiber.StatusMethodNotAllowed:
		return "method_not_allowed"
	case fiber.StatusBadRequest:
		return "bad_request"
	case fiber.StatusRequestTimeout:
		return "request_timeout"
	case fiber.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	default:
		if status >= 500 {
			return "internal_error"
		}
		return "error"
	}
}

// BindJSON decodes the request body, which must be one JSON object, into
// v, rejecting unknown fields, trailing data and anything else with 400
// invalid_json.
func BindJSON(c *fiber.Ctx, v any) error {
	body := bytes.TrimSpace(c.Body())
	if len(body) == 0 || body[0] != '{' {
		return apperr.New(apperr.Invalid, "invalid_json", "request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return apperr.Wrap(err, apperr.Invalid, "invalid_json", "invalid JSON body: "+err.Error())
	}
	// Anything but the end of the input is trailing data; dec.More alone
	// would let a stray "}" or "]" through.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apperr.New(apperr.Invalid, "invalid_json", "trailing data after the JSON object")
	}
	return nil
}

// Invalid returns a 400 error for one field.
func Invalid(field, format string, args ...any) error {
	return apperr.New(apperr.Invalid, "invalid_"+field, fmt.Sprintf(format, args...)).WithDetail("field", field)
}

// MountMetrics serves /metrics from the metrics registry.
func MountMetrics(app *fiber.App) {
	app.Get("/metrics", adaptor.HTTPHandler(metrics.Handler()))
}

// LimitBody refuses bodies larger than n bytes with 413 body_too_large. The
// server-wide limit is the largest any route accepts (media uploads); routes
// that take small bodies (callbacks, JSON APIs) add this.
func LimitBody(n int) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if len(c.Body()) > n {
			return apperr.Newf(apperr.TooLarge, "body_too_large", "request body exceeds %d bytes", n)
		}
		return c.Next()
	}
}
