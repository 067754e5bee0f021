package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/jsapi"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
)

// orderAmount is every benchmarked order's amount (fen).
const orderAmount = 2990

// orderGen builds order-creation requests: each with its own
// Idempotency-Key, for an openid of the app (so the payer is resolved from
// the database and prepaid at the simulator).
type orderGen struct {
	app     string
	openIDs []string
	run     string
	seq     atomic.Int64
}

func newOrderGen(app string, openIDs []string) *orderGen {
	return &orderGen{app: app, openIDs: openIDs, run: strconv.FormatInt(time.Now().UnixNano(), 36)}
}

func (g *orderGen) make(base string, n int) []vegeta.Target {
	out := make([]vegeta.Target, n)
	for i := range out {
		k := g.seq.Add(1)
		body, _ := json.Marshal(map[string]any{ // strings and ints always encode
			"openid": g.openIDs[int(k)%len(g.openIDs)], "amount": orderAmount, "description": "bench order",
		})
		out[i] = vegeta.Target{
			Method: http.MethodPost, URL: base + "/v1/apps/" + g.app + "/orders", Body: body,
			Header: http.Header{
				"Content-Type":    {"application/json"},
				"Authorization":   {"Bearer " + apiKey},
				"Idempotency-Key": {"bench-" + g.run + "-" + strconv.FormatInt(k, 10)},
			},
		}
	}
	return out
}

// isOrderCreated is a 201 with signed pay parameters.
func isOrderCreated(r *vegeta.Result) bool {
	return r.Code == http.StatusCreated && bytes.Contains(r.Body, []byte(`"paySign"`))
}

// sdkLoop is the bare peer of order creation: wechatpay-go's JSAPI prepay
// and request-payment signing (PrepayWithRequestPayment) against the same
// simulator, with the same merchant credentials and fields, storing
// nothing.
type sdkLoop struct {
	svc       jsapi.JsapiApiService
	appID     string
	mchID     string
	notifyURL string
	openIDs   []string
	run       string
}

func newSDKLoop(ctx context.Context, a *benchApp, simURL, notifyURL string, openIDs []string) (*sdkLoop, error) {
	pc := a.cfg.Pay
	hc, err := adapters.NewHTTPClient(config.DefaultUpstreamTimeout, consts.WechatPayAPIServer, simURL+"/wechatpay")
	if err != nil {
		return nil, err
	}
	client, err := core.NewClient(ctx,
		option.WithWechatPayPublicKeyAuthCipher(pc.MchID, pc.SerialNo, pc.PrivateKey, pc.PublicKeyID, pc.PublicKey),
		option.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("bench: wechatpay-go client: %w", err)
	}
	return &sdkLoop{
		svc: jsapi.JsapiApiService{Client: client}, appID: a.cfg.AppID, mchID: pc.MchID, notifyURL: notifyURL,
		openIDs: openIDs, run: strconv.FormatInt(time.Now().UnixNano()%1e12, 36),
	}, nil
}

func (l *sdkLoop) op(ctx context.Context, n int64) error {
	resp, _, err := l.svc.PrepayWithRequestPayment(ctx, jsapi.PrepayRequest{
		Appid: core.String(l.appID), Mchid: core.String(l.mchID), Description: core.String("bench order"),
		OutTradeNo: core.String("SDK" + l.run + "N" + strconv.FormatInt(n, 10)),
		TimeExpire: core.Time(time.Now().Add(2 * time.Hour)), NotifyUrl: core.String(l.notifyURL),
		Amount: &jsapi.Amount{Total: core.Int64(orderAmount), Currency: core.String("CNY")},
		Payer:  &jsapi.Payer{Openid: core.String(l.openIDs[int(n)%len(l.openIDs)])},
	})
	if err != nil {
		return err
	}
	if resp.PaySign == nil || *resp.PaySign == "" {
		return fmt.Errorf("bench: no paySign")
	}
	return nil
}
