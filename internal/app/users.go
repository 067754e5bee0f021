package app

import (
	"context"

	"github.com/jmoiron/sqlx"

	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sessions"
	"github.com/minigate/minigate/webhooks"
)

// registerErasers hands sessions' user erasure (DELETE /v1/users/{id}) what
// each domain keeps about a user: orders pseudonymise the payer, customer
// service deletes the inbox, the callback pipeline and events erase their
// copies. All run in the erasure's transaction.
func registerErasers(sess *sessions.Service, ord *orders.Service, cs *customerservice.Service, callbacks *webhooks.Pipeline, evs *events.Service) {
	sess.AddEraser(func(ctx context.Context, tx *sqlx.Tx, e *sessions.Erasure) error {
		payers := make([]orders.PayerRef, 0, len(e.Identities))
		for _, i := range e.Identities {
			payers = append(payers, orders.PayerRef{App: i.App, OpenID: i.OpenID, AlipayUserID: i.AlipayUserID})
		}
		return ord.ErasePayers(ctx, tx, e.UserID, payers, e.Pseudonym)
	})
	sess.AddEraser(func(ctx context.Context, tx *sqlx.Tx, e *sessions.Erasure) error {
		convs := make([]customerservice.ConversationKey, 0, len(e.Identities))
		for _, i := range e.Identities {
			convs = append(convs, customerservice.ConversationKey{App: i.App, OpenID: i.OpenID})
		}
		return cs.EraseConversations(ctx, tx, convs)
	})
	sess.AddEraser(func(ctx context.Context, tx *sqlx.Tx, e *sessions.Erasure) error {
		var cbs []webhooks.ErasedID
		var evIDs []events.ErasedID
		for _, i := range e.Identities {
			for _, id := range []string{i.OpenID, i.AlipayUserID} {
				if id == "" {
					continue
				}
				p := e.Pseudonym(i.App, id)
				cbs = append(cbs, webhooks.ErasedID{App: i.App, ID: id, Pseudonym: p})
				evIDs = append(evIDs, events.ErasedID{ID: id, Pseudonym: p})
			}
		}
		if err := callbacks.ErasePersonalData(ctx, tx, cbs); err != nil {
			return err
		}
		return evs.ErasePersonalData(ctx, tx, evIDs)
	})
}
