package events

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// ErasedID is a platform user id (openid, Alipay user id) of an erased
// user, with the pseudonym that replaces it.
type ErasedID struct {
	ID, Pseudonym string
}

// Queries of the event erasure. An id is matched as a whole JSON string.
const (
	// EventEraseMessages keeps only the app, the pseudonym and the message
	// id of the message.received events that name the id.
	EventEraseMessages = `UPDATE events
	SET data = json_build_object('app', data->'app', 'openid', $2::text,
	  'message', json_build_object('id', data->'message'->'id', 'erased', true))
	WHERE type = 'message.received' AND strpos(data::text, '"' || $1 || '"') > 0`

	// EventPseudonymise replaces the id by its pseudonym in every other
	// event that names it (order and refund events keep their amounts).
	EventPseudonymise = `UPDATE events
	SET data = replace(data::text, '"' || $1 || '"', '"' || $2 || '"')::json
	WHERE type <> 'message.received' AND strpos(data::text, '"' || $1 || '"') > 0`
)

// ErasePersonalData erases what recorded events hold of an erased user, in
// the erasure's transaction tx: message.received events lose the message
// (its text), other events get each id replaced by its pseudonym. Events
// still pending are delivered as they now are. This scans the events
// table (retention bounds it); erasures are rare.
func (s *Service) ErasePersonalData(ctx context.Context, tx *sqlx.Tx, ids []ErasedID) error {
	for _, id := range ids {
		if id.ID == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, EventEraseMessages, id.ID, id.Pseudonym); err != nil {
			return fmt.Errorf("events: erase messages: %w", err)
		}
		if _, err := tx.ExecContext(ctx, EventPseudonymise, id.ID, id.Pseudonym); err != nil {
			return fmt.Errorf("events: erase: %w", err)
		}
	}
	return nil
}
