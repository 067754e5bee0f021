package customerservice

import (
	"testing"
	"time"
)

func TestComputeWindow(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	cases := []struct {
		name string
		in   windowInput
		want Window
	}{
		{"never wrote", windowInput{}, Window{ClosedReason: ClosedNoUserMessage}},
		{"just wrote", windowInput{LastUserMessageAt: at(-time.Minute)},
			Window{Open: true, ClosesAt: at(48*time.Hour - time.Minute), Remaining: 5}},
		{"four sent", windowInput{LastUserMessageAt: at(-time.Hour), SentSinceMessage: 4},
			Window{Open: true, ClosesAt: at(47 * time.Hour), Remaining: 1}},
		{"five sent", windowInput{LastUserMessageAt: at(-time.Hour), SentSinceMessage: 5},
			Window{ClosesAt: at(47 * time.Hour), ClosedReason: ClosedQuotaUsed}},
		{"48 hours later", windowInput{LastUserMessageAt: at(-48 * time.Hour)},
			Window{ClosesAt: at(0), ClosedReason: ClosedExpired}},
		{"a second before 48 hours", windowInput{LastUserMessageAt: at(-48*time.Hour + time.Second), SentSinceMessage: 4},
			Window{Open: true, ClosesAt: at(time.Second), Remaining: 1}},
		{"entered the session", windowInput{SessionEnteredAt: at(-10 * time.Second)},
			Window{Open: true, ClosesAt: at(50 * time.Second), Remaining: 2}},
		{"entered, two sent", windowInput{SessionEnteredAt: at(-10 * time.Second), SentSinceSession: 2},
			Window{ClosesAt: at(50 * time.Second), ClosedReason: ClosedQuotaUsed}},
		{"entered a minute ago", windowInput{SessionEnteredAt: at(-time.Minute)},
			Window{ClosesAt: at(0), ClosedReason: ClosedExpired}},
		// Allowances do not add up: after entering the session a user who
		// wrote earlier (and got 4 replies) has 2, not 2+1.
		{"wrote, then entered", windowInput{LastUserMessageAt: at(-time.Hour), SentSinceMessage: 4,
			SessionEnteredAt: at(-5 * time.Second)},
			Window{Open: true, ClosesAt: at(47 * time.Hour), Remaining: 2}},
		// Replies after entering count against both allowances.
		{"wrote, entered, two replies", windowInput{LastUserMessageAt: at(-time.Hour), SentSinceMessage: 5,
			SessionEnteredAt: at(-5 * time.Second), SentSinceSession: 2},
			Window{ClosesAt: at(47 * time.Hour), ClosedReason: ClosedQuotaUsed}},
		// Writing renews the larger allowance, counted from the message.
		{"entered, then wrote", windowInput{SessionEnteredAt: at(-30 * time.Second), SentSinceSession: 2,
			LastUserMessageAt: at(-20 * time.Second), SentSinceMessage: 1},
			Window{Open: true, ClosesAt: at(48*time.Hour - 20*time.Second), Remaining: 4}},
		{"old message, fresh session", windowInput{LastUserMessageAt: at(-50 * time.Hour), SessionEnteredAt: at(-time.Second)},
			Window{Open: true, ClosesAt: at(59 * time.Second), Remaining: 2}},
		{"both expired", windowInput{LastUserMessageAt: at(-50 * time.Hour), SessionEnteredAt: at(-2 * time.Hour)},
			Window{ClosesAt: at(-2*time.Hour + time.Minute), ClosedReason: ClosedExpired}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := computeWindow(now, tc.in)
			if got.Open != tc.want.Open || got.Remaining != tc.want.Remaining || got.ClosedReason != tc.want.ClosedReason ||
				(got.ClosesAt == nil) != (tc.want.ClosesAt == nil) || (got.ClosesAt != nil && !got.ClosesAt.Equal(*tc.want.ClosesAt)) {
				t.Fatalf("window = %+v (closes %v), want %+v (closes %v)", got, got.ClosesAt, tc.want, tc.want.ClosesAt)
			}
		})
	}
}
