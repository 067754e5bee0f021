package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/riverqueue/river"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/ids"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/webhooks"
)

// seedAmount is every seeded order's amount (fen).
const seedAmount = 2990

// seeded is an unpaid order stored for a notification to pay.
type seeded struct {
	ID, OutTradeNo, OpenID string
}

// OrderSeedBatch stores unpaid WeChat orders with their "created" timeline
// rows, as order creation leaves them (without a prepay, which payment
// notifications do not look at). Their recovery check is an hour away, so
// the sweep leaves them alone during the run.
const OrderSeedBatch = `
WITH o AS (
	INSERT INTO orders (id, app, platform, payer_openid, out_trade_no, description, amount, currency,
		expires_at, next_check_at, created_at, updated_at)
	SELECT t.id, $1, 'wechat', t.openid, t.otn, $2, $3, 'CNY', $4, $5, $6, $6
	FROM unnest($7::text[], $8::text[], $9::text[]) AS t(id, openid, otn)
	RETURNING id, created_at
)
INSERT INTO order_events (order_id, kind, to_status, source, created_at)
SELECT id, 'created', 'created', 'api', created_at FROM o`

// seedOrders stores n unpaid orders of app in pool.
func seedOrders(ctx context.Context, pool *sqlx.DB, app string, openIDs []string, n int) ([]seeded, error) {
	out := make([]seeded, 0, n)
	now := time.Now().UTC()
	const batch = 5000
	for len(out) < n {
		k := min(batch, n-len(out))
		idv, oidv, otnv := make([]string, k), make([]string, k), make([]string, k)
		for i := range k {
			id := ids.New("ord")
			s := seeded{ID: id, OutTradeNo: "MG" + id[len("ord_"):], OpenID: openIDs[(len(out)+i)%len(openIDs)]}
			idv[i], oidv[i], otnv[i] = s.ID, s.OpenID, s.OutTradeNo
			out = append(out, s)
		}
		if _, err := pool.ExecContext(ctx, OrderSeedBatch, app, "bench order", seedAmount,
			now.Add(2*time.Hour), now.Add(time.Hour), now, pq.Array(idv), pq.Array(oidv), pq.Array(otnv)); err != nil {
			return nil, fmt.Errorf("bench: seed orders: %w", err)
		}
	}
	return out, nil
}

// notifyGen builds WeChat Pay TRANSACTION.SUCCESS notifications as the
// platform sends them: the transaction encrypted with AES-256-GCM under the
// APIv3 key, the envelope signed (SHA256withRSA) with the platform key
// the simulator holds, serial = the WeChat Pay public key id. Signing uses
// wechatpay-go's own signer.
type notifyGen struct {
	app                            string
	appID, mchID, apiV3Key, serial string
	key                            *rsa.PrivateKey
}

func newNotifyGen(a *benchApp) *notifyGen {
	m := a.sb.WeChatPay
	return &notifyGen{app: a.cfg.ID, appID: a.cfg.AppID, mchID: m.MchID, apiV3Key: m.APIv3Key, serial: m.PublicKeyID, key: m.PlatformKey}
}

// make returns one notification per order, addressed to base; RSA signing
// is spread over workers goroutines.
func (g *notifyGen) make(base string, batch []seeded, workers int) ([]vegeta.Target, error) {
	out := make([]vegeta.Target, len(batch))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(batch); i += workers {
				t, err := g.one(base, batch[i])
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
				out[i] = t
			}
		})
	}
	wg.Wait()
	return out, firstErr
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// payZone is China Standard Time, the zone of WeChat Pay's timestamps.
var payZone = time.FixedZone("CST", 8*3600)

func (g *notifyGen) one(base string, o seeded) (vegeta.Target, error) {
	now := time.Now()
	total := int64(seedAmount)
	tx := map[string]any{
		"appid": g.appID, "mchid": g.mchID, "out_trade_no": o.OutTradeNo,
		"transaction_id": "42000" + now.In(payZone).Format("20060102") + randomDigits(15),
		"trade_type":     "JSAPI", "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
		"attach": "", "success_time": now.In(payZone).Format(time.RFC3339),
		"payer":  map[string]string{"openid": o.OpenID},
		"amount": map[string]any{"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
	}
	plain, err := json.Marshal(tx)
	if err != nil {
		return vegeta.Target{}, err
	}
	nonce := randomAlnum(12)
	ct, err := sealGCM(g.apiV3Key, nonce, "transaction", plain)
	if err != nil {
		return vegeta.Target{}, err
	}
	body, err := json.Marshal(map[string]any{
		"id": "EV-" + now.In(payZone).Format("20060102150405") + randomDigits(12), "create_time": now.In(payZone).Format(time.RFC3339),
		"resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
		"resource": map[string]string{
			"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
			"ciphertext": ct, "associated_data": "transaction", "nonce": nonce,
		},
	})
	if err != nil {
		return vegeta.Target{}, err
	}
	ts, sigNonce := strconv.FormatInt(now.Unix(), 10), randomAlnum(32)
	sig, err := utils.SignSHA256WithRSA(ts+"\n"+sigNonce+"\n"+string(body)+"\n", g.key)
	if err != nil {
		return vegeta.Target{}, fmt.Errorf("bench: sign notification: %w", err)
	}
	return vegeta.Target{
		Method: http.MethodPost, URL: base + "/callbacks/" + g.app + "/payments", Body: body,
		Header: http.Header{
			"Content-Type":             {"application/json"},
			"Wechatpay-Timestamp":      {ts},
			"Wechatpay-Nonce":          {sigNonce},
			"Wechatpay-Signature":      {sig},
			"Wechatpay-Serial":         {g.serial},
			"Wechatpay-Signature-Type": {"WECHATPAY2-SHA256-RSA2048"},
			"Request-Id":               {hex.EncodeToString([]byte(sigNonce[:8]))},
		},
	}, nil
}

// sealGCM encrypts plaintext as WeChat Pay does: AES-256-GCM with the APIv3
// key, base64 of ciphertext ‖ tag.
func sealGCM(key, nonce, aad string, plaintext []byte) (string, error) {
	block, err := aes.NewCipher([]byte(key))
	if err != nil {
		return "", err
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(nonce))
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(gcm.Seal(nil, []byte(nonce), plaintext, []byte(aad))), nil
}

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomAlnum(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

func randomDigits(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}

// isNotifyAck is WeChat Pay's "received": 200 or 204.
func isNotifyAck(r *vegeta.Result) bool {
	return r.Code == http.StatusOK || r.Code == http.StatusNoContent
}

// notifyCeiling runs a payment notification's statements directly, in one
// transaction, as the pipeline and orders do for a new TRANSACTION.SUCCESS
// of a created order: store the callback, lock the order, move it created
// → paying → paid with a timeline row each, record order.paid and insert
// its delivery job.
type notifyCeiling struct {
	app    string
	db     *sqlx.DB
	river  *river.Client[*sql.Tx]
	orders []seeded
}

func (c *notifyCeiling) op(ctx context.Context, n int64) error {
	if int(n) > len(c.orders) {
		return fmt.Errorf("bench: only %d orders were seeded", len(c.orders))
	}
	so := c.orders[n-1]
	now := time.Now().UTC().Truncate(time.Microsecond)
	txID := "42000" + now.In(payZone).Format("20060102") + randomDigits(15)
	notif := webhooks.Opened[*orders.Notification]{
		DedupKey:  "EV-" + now.In(payZone).Format("20060102150405") + randomDigits(12),
		EventType: "TRANSACTION.SUCCESS",
		Payload: &orders.Notification{Kind: orders.NotifyPayment, Transaction: &orders.Transaction{
			AppID: "wx-bench", MchID: "1900000000", OutTradeNo: so.OutTradeNo, TransactionID: txID,
			State: orders.PaymentPaid, Amount: seedAmount, Currency: "CNY", PaidAt: now,
		}},
		Summary: map[string]any{
			"event_type": "TRANSACTION.SUCCESS", "appid": "wx-bench", "mchid": "1900000000", "out_trade_no": so.OutTradeNo,
			"transaction_id": txID, "trade_state": "SUCCESS", "amount": seedAmount, "currency": "CNY",
		},
	}
	summary, _ := json.Marshal(notif.Summary) // maps of strings and numbers always encode
	payload, err := json.Marshal(notif.Payload)
	if err != nil {
		return err
	}
	tx, err := c.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	var cbID int64
	if err := tx.QueryRowContext(ctx, webhooks.CallbackInsertIfNew, c.app, string(webhooks.KindPayments),
		notif.DedupKey, notif.EventType, string(summary), string(payload), now).Scan(&cbID); err != nil {
		return fmt.Errorf("callback: %w", err)
	}
	var o orders.Order
	if err := sqlx.GetContext(ctx, tx, &o, orders.OrderGetByOutTradeNoForUpdate, c.app, so.OutTradeNo); err != nil {
		return fmt.Errorf("lock order: %w", err)
	}
	move := func(from, to orders.Status, txID string, paidAt *time.Time, detail map[string]any) error {
		if err := sqlx.GetContext(ctx, tx, &o, orders.OrderSetStatusIfIn, o.ID, pq.Array([]string{string(from)}), string(to),
			now, txID, paidAt, nil); err != nil {
			return fmt.Errorf("move %s: %w", to, err)
		}
		d, _ := json.Marshal(detail)
		if _, err := tx.ExecContext(ctx, orders.OrderEventInsert, o.ID, orders.KindStatus, string(from), string(to),
			string(orders.SourceNotify), d, now); err != nil {
			return fmt.Errorf("timeline: %w", err)
		}
		return nil
	}
	base := map[string]any{"callback_id": cbID, "event_type": notif.EventType}
	if err := move(orders.StatusCreated, orders.StatusPaying, "", nil, with(base, "implied_by", "paid")); err != nil {
		return err
	}
	if err := move(orders.StatusPaying, orders.StatusPaid, txID, &now, with(base, "transaction_id", txID)); err != nil {
		return err
	}
	data, _ := json.Marshal(map[string]any{
		"order_id": o.ID, "app": o.App, "platform": o.Platform, "user_id": o.UserID, "out_trade_no": o.OutTradeNo,
		"amount": o.Amount, "currency": o.Currency, "status": o.Status, "transaction_id": o.TransactionID,
		"refunded_amount": o.RefundedAmount, "paid_at": o.PaidAt, "closed_at": o.ClosedAt, "openid": o.PayerOpenID,
	})
	if err := publishDirect(ctx, tx, c.river, events.TypeOrderPaid, data, now); err != nil {
		return err
	}
	return tx.Commit()
}

func with(m map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for mk, mv := range m {
		out[mk] = mv
	}
	out[k] = v
	return out
}
