package orders

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// PayerRef is a platform identity of a user being erased: an app and the
// openid (and Alipay user id) it pays with.
type PayerRef struct {
	App, OpenID, AlipayUserID string
}

// erasedPrefix starts pseudonyms (sessions.Erasure.Pseudonym); a payer
// reference that has one is already pseudonymised.
const erasedPrefix = "erased_"

// Queries of the payer erasure.
const (
	// OrderListPayersOfUser lists the orders whose payer is user $1: those
	// created for the user, and those created for one of its identities by
	// openid ($2 apps, $3 openids) or Alipay user id ($2 apps, $4 ids)
	// without a user.
	OrderListPayersOfUser = `SELECT id, app, payer_openid, payer_alipay_user_id FROM orders WHERE user_id = $1
	UNION
	SELECT o.id, o.app, o.payer_openid, o.payer_alipay_user_id
	FROM orders o JOIN unnest($2::text[], $3::text[]) AS p (app, openid) ON o.app = p.app AND o.payer_openid = p.openid
	WHERE o.user_id IS NULL AND p.openid <> ''
	UNION
	SELECT o.id, o.app, o.payer_openid, o.payer_alipay_user_id
	FROM orders o JOIN unnest($2::text[], $4::text[]) AS p (app, uid) ON o.app = p.app AND o.payer_alipay_user_id = p.uid
	WHERE o.user_id IS NULL AND p.uid <> ''`

	// OrderSetPayers replaces the payer references of orders $1 with $2
	// (openids) and $3 (Alipay user ids).
	OrderSetPayers = `UPDATE orders o SET payer_openid = v.openid, payer_alipay_user_id = v.uid, updated_at = $4
	FROM unnest($1::text[], $2::text[], $3::text[]) AS v (id, openid, uid) WHERE o.id = v.id`
)

// ErasePayers pseudonymises the payer references (openid, Alipay user id)
// of user userID's orders — created for the user, or for one of payers
// without a user — with pseudonym, in the erasure's transaction tx, and
// notes it on each order's timeline. Amounts, states, refunds and
// platform transaction ids stay: the books must still add up.
func (s *Service) ErasePayers(ctx context.Context, tx *sqlx.Tx, userID string, payers []PayerRef, pseudonym func(app, id string) string) error {
	apps, openIDs, uids := make([]string, len(payers)), make([]string, len(payers)), make([]string, len(payers))
	for i, p := range payers {
		apps[i], openIDs[i], uids[i] = p.App, p.OpenID, p.AlipayUserID
	}
	var rows []struct {
		ID           string `db:"id"`
		App          string `db:"app"`
		OpenID       string `db:"payer_openid"`
		AlipayUserID string `db:"payer_alipay_user_id"`
	}
	if err := sqlx.SelectContext(ctx, tx, &rows, OrderListPayersOfUser, userID, pq.Array(apps), pq.Array(openIDs), pq.Array(uids)); err != nil {
		return fmt.Errorf("orders: erase payers: %w", err)
	}
	pseud := func(app, v string) string {
		if v == "" || strings.HasPrefix(v, erasedPrefix) {
			return v
		}
		return pseudonym(app, v)
	}
	var ids, newOpenIDs, newUIDs []string
	for _, r := range rows {
		o, u := pseud(r.App, r.OpenID), pseud(r.App, r.AlipayUserID)
		if o == r.OpenID && u == r.AlipayUserID {
			continue
		}
		ids, newOpenIDs, newUIDs = append(ids, r.ID), append(newOpenIDs, o), append(newUIDs, u)
	}
	if len(ids) == 0 {
		return nil
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	if _, err := tx.ExecContext(ctx, OrderSetPayers, pq.Array(ids), pq.Array(newOpenIDs), pq.Array(newUIDs), now); err != nil {
		return fmt.Errorf("orders: erase payers: %w", err)
	}
	for _, id := range ids {
		row := timelineRow{OrderID: id, Kind: KindPayerErased, Source: SourceAPI, Detail: map[string]any{"user_id": userID}}
		if err := insertTimeline(ctx, tx, row, now); err != nil {
			return err
		}
	}
	return nil
}
