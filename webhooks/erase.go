package webhooks

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// ErasedID is a platform user id (openid, Alipay user id) of an erased
// user in one app, with the pseudonym that replaces it.
type ErasedID struct {
	App, ID, Pseudonym string
}

// Queries of the callback erasure. A user id is matched as a whole JSON
// string ("…"), never inside another value.
const (
	// CallbackEraseMessages empties the payloads of the app's message
	// pushes that name the id: they hold what the user wrote.
	CallbackEraseMessages = `UPDATE callbacks SET payload = '{"erased": true}'
	WHERE app = $1 AND kind = 'messages' AND strpos(payload::text, '"' || $2 || '"') > 0`

	// CallbackPseudonymisePayments replaces the id in the app's payment
	// notifications by its pseudonym (they stay for accounting).
	CallbackPseudonymisePayments = `UPDATE callbacks
	SET payload = replace(payload::text, '"' || $2 || '"', '"' || $3 || '"')::json
	WHERE app = $1 AND kind = 'payments' AND strpos(payload::text, '"' || $2 || '"') > 0`
)

// ErasePersonalData erases what stored callbacks hold of an erased user,
// in the erasure's transaction tx: message pushes that name one of ids
// lose their payload; payment notifications keep theirs with each id
// replaced by its pseudonym. The rows stay, so de-duplication still
// holds. Rejected callbacks (bounded, unverified, kept briefly for
// operators) are not searched.
func (p *Pipeline) ErasePersonalData(ctx context.Context, tx *sqlx.Tx, ids []ErasedID) error {
	for _, id := range ids {
		if id.ID == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, CallbackEraseMessages, id.App, id.ID); err != nil {
			return fmt.Errorf("webhooks: erase messages: %w", err)
		}
		if _, err := tx.ExecContext(ctx, CallbackPseudonymisePayments, id.App, id.ID, id.Pseudonym); err != nil {
			return fmt.Errorf("webhooks: erase payments: %w", err)
		}
	}
	return nil
}
