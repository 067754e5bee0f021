package customerservice

import "time"

// The reply windows, as WeChat documents them for mini-program customer
// service (QQ is modelled on WeChat): a user's message allows 5 messages
// within 48 hours; entering the customer-service session allows 2 within
// a minute. Allowances do not add up: each user action renews its own
// allowance, and a send counts against every allowance granted before it.
const (
	UserMessageLimit  = 5
	UserMessageWindow = 48 * time.Hour
	SessionLimit      = 2
	SessionWindow     = time.Minute
)

// Why a reply window is closed.
const (
	ClosedNoUserMessage = "no_user_message" // the user never wrote or entered the session
	ClosedExpired       = "expired"         // the last allowance ran out of time
	ClosedQuotaUsed     = "quota_used"      // every message allowed was sent
)

// Window is whether minigate may send to a user now.
type Window struct {
	Open bool `json:"open"`
	// ClosesAt is the end of the latest allowance: when an open window
	// closes, or when a closed one closed (or will, when closed by quota).
	// Nil when the user never opened one.
	ClosesAt *time.Time `json:"closes_at"`
	// Remaining is how many messages may still be sent.
	Remaining int `json:"remaining"`
	// ClosedReason says why a window is closed.
	ClosedReason string `json:"closed_reason,omitempty"`
}

// windowInput is what a window is computed from: when the user last wrote
// and entered the session (the platform's times, which the allowances
// last from), and how many of our messages (sending, sent or of unknown
// outcome) were made after minigate received each of them.
type windowInput struct {
	LastUserMessageAt *time.Time
	SessionEnteredAt  *time.Time
	SentSinceMessage  int
	SentSinceSession  int
}

// computeWindow evaluates the reply window at now. A window is open when an
// allowance has time and messages left; the most generous allowance wins.
func computeWindow(now time.Time, in windowInput) Window {
	type allowance struct {
		end  time.Time
		left int
	}
	var grants []allowance
	if in.LastUserMessageAt != nil {
		grants = append(grants, allowance{in.LastUserMessageAt.Add(UserMessageWindow), UserMessageLimit - in.SentSinceMessage})
	}
	if in.SessionEnteredAt != nil {
		grants = append(grants, allowance{in.SessionEnteredAt.Add(SessionWindow), SessionLimit - in.SentSinceSession})
	}
	if len(grants) == 0 {
		return Window{ClosedReason: ClosedNoUserMessage}
	}
	var (
		w          Window
		latest     time.Time // the end of the latest allowance
		timeLeft   bool      // some allowance has time left
		openEnd    time.Time // the end of the latest allowance with messages left
		openAmount int
	)
	for _, g := range grants {
		if g.end.After(latest) {
			latest = g.end
		}
		if !now.Before(g.end) {
			continue
		}
		timeLeft = true
		if g.left > 0 {
			w.Open = true
			openAmount = max(openAmount, g.left)
			if g.end.After(openEnd) {
				openEnd = g.end
			}
		}
	}
	switch {
	case w.Open:
		w.ClosesAt, w.Remaining = &openEnd, openAmount
	case timeLeft:
		w.ClosesAt, w.ClosedReason = &latest, ClosedQuotaUsed
	default:
		w.ClosesAt, w.ClosedReason = &latest, ClosedExpired
	}
	return w
}
