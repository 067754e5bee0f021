package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/riverqueue/river"

	"github.com/minigate/minigate/internal/metrics"
	"github.com/minigate/minigate/webhooks"
)

// Backoff is the delivery retry schedule: after the n-th failed attempt
// the next one waits Base·2^(n-1), at most Max, plus up to 10% jitter; an
// event is given up (state failed) after MaxAttempts attempts.
type Backoff struct {
	Base        time.Duration
	Max         time.Duration
	MaxAttempts int
}

// DefaultBackoff retries for 24 h 15 min (without jitter): 15 s, 30 s,
// 1 min, … doubling to 4 h, then every 4 h, 16 attempts in all.
var DefaultBackoff = Backoff{Base: 15 * time.Second, Max: 4 * time.Hour, MaxAttempts: 16}

func (b Backoff) validate() error {
	if b.Base <= 0 || b.Max < b.Base || b.MaxAttempts < 1 {
		return fmt.Errorf("events: invalid backoff %+v", b)
	}
	return nil
}

// Delay is the wait after the n-th failed attempt (n ≥ 1), without jitter.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Base
	for i := 1; i < n; i++ {
		if d >= b.Max/2 {
			return b.Max
		}
		d *= 2
	}
	return min(d, b.Max)
}

// Span is how long an event is retried before it is given up: the sum of
// the delays between its MaxAttempts attempts, without jitter.
func (b Backoff) Span() time.Duration {
	var total time.Duration
	for n := 1; n < b.MaxAttempts; n++ {
		total += b.Delay(n)
	}
	return total
}

// jittered adds up to 10% to Delay(n), never less, so Span is a lower bound.
func (b Backoff) jittered(n int) time.Duration {
	d := b.Delay(n)
	return d + rand.N(d/10+1)
}

// DeliverArgs is the River job that sends one event once (with retries).
type DeliverArgs struct {
	EventID string `json:"event_id"`
}

// Kind implements river.JobArgs.
func (DeliverArgs) Kind() string { return "event_deliver" }

// InsertOpts puts delivery jobs in their own queue.
func (DeliverArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: Queue} }

type deliverWorker struct {
	river.WorkerDefaults[DeliverArgs]
	s *Service
}

// NextRetry follows the Service's Backoff rather than River's default.
func (w *deliverWorker) NextRetry(job *river.Job[DeliverArgs]) time.Time {
	return time.Now().Add(w.s.backoff.jittered(job.Attempt))
}

// Timeout leaves room to record the attempt after the HTTP timeout.
func (w *deliverWorker) Timeout(*river.Job[DeliverArgs]) time.Duration {
	return w.s.timeout + 10*time.Second
}

// Work makes one delivery attempt.
func (w *deliverWorker) Work(ctx context.Context, job *river.Job[DeliverArgs]) error {
	return w.s.deliver(ctx, job.ID, job.Attempt, job.MaxAttempts, job.Args.EventID)
}

// envelope is the body sent to the backend.
type envelope struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

// Body is the JSON body delivered for ev.
func Body(ev Event) ([]byte, error) {
	b, err := json.Marshal(envelope{ID: ev.ID, Type: ev.Type, CreatedAt: ev.CreatedAt.UTC(), Data: ev.Data})
	if err != nil {
		return nil, fmt.Errorf("events: encode %s: %w", ev.ID, err)
	}
	return b, nil
}

// deliver makes one attempt and records it. A returned error makes River
// retry per Backoff (or give up after the last attempt).
func (s *Service) deliver(ctx context.Context, jobID int64, number, maxAttempts int, id string) error {
	ev, err := getEvent(ctx, s.db, id)
	if errors.Is(err, ErrNotFound) {
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	if s.url == "" {
		// events.url was removed after the event was queued.
		if _, err := s.db.ExecContext(ctx, EventMarkNotConfigured, id); err != nil {
			return fmt.Errorf("events: mark not configured: %w", err)
		}
		return nil
	}
	body, err := Body(ev)
	if err != nil {
		return river.JobCancel(err)
	}
	start := time.Now()
	status, sendErr := s.post(ctx, ev.ID, body)
	a := attempt{
		eventID: ev.ID, jobID: jobID, number: number, status: status,
		duration: time.Since(start), at: start.UTC(),
		delivered: sendErr == nil, lastChance: number >= maxAttempts,
	}
	metrics.EventDeliveryDuration.Observe(a.duration.Seconds())
	switch {
	case sendErr == nil:
		metrics.EventDeliveries.WithLabelValues(ev.Type, "delivered").Inc()
	case a.lastChance:
		metrics.EventDeliveries.WithLabelValues(ev.Type, "given_up").Inc()
	default:
		metrics.EventDeliveries.WithLabelValues(ev.Type, "failed").Inc()
	}
	if sendErr != nil {
		a.err = webhooks.CleanText(sendErr.Error())
		s.log.Warn("event delivery failed", "event_id", ev.ID, "type", ev.Type, "attempt", number,
			"max_attempts", maxAttempts, "status", status, "err", a.err)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := recordAttempt(rctx, s.db, a); err != nil {
		// The attempt happened; failing to record it only risks one
		// more delivery, which receivers de-duplicate by webhook-id.
		s.log.Error("event delivery not recorded", "event_id", ev.ID, "err", err)
		if sendErr == nil {
			return err
		}
	}
	return sendErr
}

// maxErrorBody is how much of a failing response is kept in the error.
const maxErrorBody = 256

// post sends one signed delivery; any answer but 2xx is an error. Errors
// never include the URL (it may carry credentials).
func (s *Service) post(ctx context.Context, id string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("invalid events URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "minigate-events/1")
	s.signer.SetHeaders(req.Header, id, time.Now(), body)
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("no response: %w", err)
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(excerpt))
	}
	return resp.StatusCode, nil
}
