package sandbox

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Platform-like redelivery. The platforms send a callback again when it was
// not acknowledged: WeChat Pay and QQ wallet on a schedule of growing delays
// for about a day, Alipay for about 25 hours, WeChat message pushes a few
// times. With a schedule set (Options.Redeliver, SetRedelivery or PUT
// /sandbox/redelivery) the simulator does the same for every callback it
// sends: an attempt that was not acknowledged in the platform's terms (see
// acknowledged), or that got no answer at all, is repeated in the background
// after each delay of the schedule in turn until one is acknowledged or the
// schedule ends. Each repeat is the original request byte for byte, as a
// replay; with unscaled schedules, repeats after minigate's callback window
// are refused as stale, which is what a platform's late retry with an old
// signature would meet too.
//
// While a schedule is set the simulator also records every callback it
// sends with every attempt (Callbacks), and WaitRedelivered waits until none
// is in flight or waiting for a retry: tests drive a burst, break minigate,
// repair it, wait, then read what every delivery met.

// WeChatPayRetries is WeChat Pay's notification retry schedule (15 s, 15 s,
// 30 s, 3 min, 10 min, 20 min, 30 min ×3, 1 h, 3 h ×3, 6 h ×2: 24 h 4 min).
// Tests scale it down with Scaled.
var WeChatPayRetries = []time.Duration{
	15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, time.Hour,
	3 * time.Hour, 3 * time.Hour, 3 * time.Hour, 6 * time.Hour, 6 * time.Hour,
}

// Scaled returns schedule with every delay multiplied by f (at least one
// millisecond each): Scaled(WeChatPayRetries, 0.001) retries after 15 ms,
// 15 ms, 30 ms, 180 ms, … for 87 seconds in all.
func Scaled(schedule []time.Duration, f float64) []time.Duration {
	out := make([]time.Duration, len(schedule))
	for i, d := range schedule {
		out[i] = max(time.Duration(float64(d)*f), time.Millisecond)
	}
	return out
}

// Callback is one callback the simulator sent while redelivery was on, with
// every attempt at delivering it.
type Callback struct {
	ID  int64  `json:"id"`
	URL string `json:"url"`
	// Attempts are the deliveries made so far, oldest first.
	Attempts []Delivery `json:"attempts"`
	// Acked: an attempt was acknowledged in the platform's terms.
	Acked bool `json:"acked"`
	// Pending: an attempt is in flight or a retry is scheduled.
	Pending bool `json:"pending"`
}

// redelivery is the simulator's retry state.
type redelivery struct {
	mu       sync.Mutex
	schedule []time.Duration
	// stop is closed when the schedule changes: the retries scheduled
	// under the old one end.
	stop      chan struct{}
	callbacks []*Callback
	// changed is closed and replaced whenever a callback changes.
	changed chan struct{}
}

func newRedelivery(schedule []time.Duration) *redelivery {
	return &redelivery{schedule: schedule, stop: make(chan struct{}), changed: make(chan struct{})}
}

// notifyLocked wakes WaitRedelivered. Callers hold r.mu.
func (r *redelivery) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// begin records a callback about to be delivered to url; it returns nil
// when redelivery is off.
func (r *redelivery) begin(url string) (*Callback, []time.Duration, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.schedule == nil {
		return nil, nil, nil
	}
	cb := &Callback{ID: int64(len(r.callbacks) + 1), URL: url, Pending: true}
	r.callbacks = append(r.callbacks, cb)
	r.notifyLocked()
	return cb, r.schedule, r.stop
}

// record adds an attempt to cb; pending says whether another will follow.
func (r *redelivery) record(cb *Callback, d Delivery, pending bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cb.Attempts = append(cb.Attempts, d)
	cb.Acked = cb.Acked || d.Acked
	cb.Pending = pending && !cb.Acked
	r.notifyLocked()
}

// end marks cb as given up.
func (r *redelivery) end(cb *Callback) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cb.Pending = false
	r.notifyLocked()
}

// SetRedelivery sets the retry schedule (nil turns redelivery off). The
// retries scheduled under the previous schedule end, and the record of
// callbacks starts afresh.
func (s *Sandbox) SetRedelivery(schedule []time.Duration) {
	r := s.redeliver
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.stop)
	r.stop = make(chan struct{})
	if schedule != nil {
		schedule = append([]time.Duration{}, schedule...)
	}
	r.schedule = schedule
	for _, cb := range r.callbacks {
		cb.Pending = false
	}
	r.callbacks = nil
	r.notifyLocked()
}

// Callbacks returns (copies of) the callbacks sent while redelivery was on
// to URLs starting with prefix, oldest first.
func (s *Sandbox) Callbacks(prefix string) []Callback {
	r := s.redeliver
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Callback
	for _, cb := range r.callbacks {
		if strings.HasPrefix(cb.URL, prefix) {
			c := *cb
			c.Attempts = append([]Delivery(nil), cb.Attempts...)
			out = append(out, c)
		}
	}
	return out
}

// WaitRedelivered waits until no callback to a URL starting with prefix is
// in flight or waiting for a retry, or ctx ends.
func (s *Sandbox) WaitRedelivered(ctx context.Context, prefix string) error {
	r := s.redeliver
	for {
		r.mu.Lock()
		pending := 0
		for _, cb := range r.callbacks {
			if cb.Pending && strings.HasPrefix(cb.URL, prefix) {
				pending++
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if pending == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("sandbox: %d callbacks to %s still pending: %w", pending, prefix, ctx.Err())
		}
	}
}

// deliver posts body to url and, when redelivery is on and the attempt was
// not acknowledged, schedules the platform's retries in the background.
func (s *Sandbox) deliver(ctx context.Context, url, contentType string, header http.Header, body []byte) Delivery {
	// The caller may reuse its buffers once deliver returns.
	body, header = bytes.Clone(body), header.Clone()
	return s.deliverRebuilt(ctx, 0, nil, func(int) (string, string, http.Header, []byte, error) {
		return url, contentType, header, body, nil
	})
}

// deliverRebuilt is deliver for callbacks the platform builds and signs
// anew for every attempt (WeChat's virtual payment pushes carry a retry
// count): request makes attempt n's request, from 0. Attempts are counted
// as received by ack (acknowledged when nil), and there are at most
// maxAttempts of them (0: as many as the schedule has delays, plus one).
func (s *Sandbox) deliverRebuilt(ctx context.Context, maxAttempts int, ack func(Delivery) bool,
	request func(n int) (url, contentType string, header http.Header, body []byte, err error)) Delivery {
	url, contentType, header, body, err := request(0)
	if err != nil {
		return Delivery{Error: err.Error(), At: s.now()}
	}
	if ack == nil {
		ack = func(d Delivery) bool { return acknowledged(contentType, d) }
	}
	cb, schedule, stop := s.redeliver.begin(url)
	d := s.post(ctx, url, contentType, header, body, ack)
	if cb == nil {
		return d
	}
	if maxAttempts > 0 && len(schedule) > maxAttempts-1 {
		schedule = schedule[:maxAttempts-1]
	}
	if d.Acked || len(schedule) == 0 {
		s.redeliver.record(cb, d, false)
		return d
	}
	s.redeliver.record(cb, d, true)
	go s.retry(cb, schedule, stop, ack, request)
	return d
}

// retry repeats a delivery after each delay of schedule until one is
// acknowledged, the schedule ends or stop is closed.
func (s *Sandbox) retry(cb *Callback, schedule []time.Duration, stop chan struct{}, ack func(Delivery) bool,
	request func(n int) (string, string, http.Header, []byte, error)) {
	for i, wait := range schedule {
		t := time.NewTimer(wait)
		select {
		case <-stop:
			t.Stop()
			s.redeliver.end(cb)
			return
		case <-t.C:
		}
		var d Delivery
		url, contentType, header, body, err := request(i + 1)
		if err != nil {
			d = Delivery{Error: err.Error(), At: s.now()}
		} else {
			d = s.post(context.Background(), url, contentType, header, body, ack)
		}
		s.redeliver.record(cb, d, i < len(schedule)-1)
		if d.Acked {
			return
		}
	}
}

// acknowledged reports whether the platform would count an answer as
// "received": a 2xx and, where the platform reads the body, the words it
// expects — exactly "success" for Alipay (form posts), a return_code of
// SUCCESS for QQ wallet (XML answers carrying one). WeChat Pay counts any
// 2xx (a 200 with a FAIL body too); WeChat and QQ message pushes count a
// 2xx ("success" or an empty body is what minigate sends).
func acknowledged(contentType string, d Delivery) bool {
	if d.Error != "" || d.Status < 200 || d.Status > 299 {
		return false
	}
	if contentType == alipayFormType {
		return strings.TrimSpace(d.Body) == "success"
	}
	if strings.Contains(d.Body, "<return_code>") {
		var r struct {
			ReturnCode string `xml:"return_code"`
		}
		if err := xml.Unmarshal([]byte(d.Body), &r); err != nil {
			return false
		}
		return strings.TrimSpace(r.ReturnCode) == "SUCCESS"
	}
	return true
}
