package webhooks

import (
	"context"

	"github.com/gofiber/fiber/v2"
	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/apperr"
)

// PaymentVerifier checks and opens one app's payment-channel notifications
// (payments and refunds): WeChat Pay v3, Alipay async notify, QQ wallet.
// The adapters' pay clients implement it. T is the domain's payload
// (*orders.Notification); the verifier also says how the pipeline
// identifies the notification (Opened's DedupKey, EventType, Summary).
// Input that is not provably from the platform yields a *VerifyError.
type PaymentVerifier[T any] interface {
	// ParseNotification verifies (signature, timestamp window), decrypts,
	// checks the app and merchant and parses a notification.
	ParseNotification(ctx context.Context, req Request) (Opened[T], error)
	// NotifyAck is the platform's "received" reply.
	NotifyAck() Reply
	// NotifyNack builds the platform's "not received, retry" reply body.
	NotifyNack(message string) Reply
}

// PaymentSink receives accepted payment notifications inside the
// transaction that stores the callback, once per de-duplication key, as
// MessageSink receives message pushes. orders.Service implements it (the
// order's state move, its timeline row and its event). The Spec.Apply rules
// hold: no platform calls, a *VerifyError refuses the notification.
type PaymentSink[T any] interface {
	ReceivePayment(ctx context.Context, tx *sqlx.Tx, cb Callback, payload T) error
}

// ErrUnknownPaymentApp is returned for a payment notification to an app
// that is not configured, or that has no payment channel.
var ErrUnknownPaymentApp = apperr.New(apperr.NotFound, "app_not_found", "no such app")

// Payments serves the payment-notification callback, POST
// /callbacks/{app}/payments, for every app with a PaymentVerifier.
type Payments[T any] struct {
	pipeline *Pipeline
	specs    map[string]Spec[T]
}

// NewPayments returns the payment-callback handler. verifiers maps
// minigate app ids to their payment adapter; sink applies what is
// accepted. Each app's channel is assembled here, once: a notification
// then goes through the adapter (open), the pipeline (store) and the sink
// (apply), in that order, and is answered with the adapter's reply.
func NewPayments[T any](p *Pipeline, verifiers map[string]PaymentVerifier[T], sink PaymentSink[T]) *Payments[T] {
	specs := make(map[string]Spec[T], len(verifiers))
	for app, v := range verifiers {
		if v == nil {
			continue
		}
		specs[app] = Spec[T]{
			App:   app,
			Kind:  KindPayments,
			Open:  v.ParseNotification,
			Apply: sink.ReceivePayment,
			Ack:   v.NotifyAck(),
			Nack:  v.NotifyNack,
		}
	}
	return &Payments[T]{pipeline: p, specs: specs}
}

// Mount registers POST /callbacks/:app/payments on r.
func (ps *Payments[T]) Mount(r fiber.Router) {
	r.Post("/callbacks/:app/payments", ps.receive)
}

func (ps *Payments[T]) receive(c *fiber.Ctx) error {
	spec, ok := ps.specs[c.Params("app")]
	if !ok {
		return ErrUnknownPaymentApp
	}
	return Handle(ps.pipeline, c, spec)
}
