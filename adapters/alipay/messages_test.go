package alipay_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/alipay"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

func TestMessagesFromSimulator(t *testing.T) {
	t.Parallel()
	for i, withAES := range []bool{false, true, false} {
		name := map[bool]string{false: "plaintext", true: "encrypted"}[withAES]
		if i == 2 {
			name = "certificate mode"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setupMode(t, withAES, i == 2)
			ctx := context.Background()
			u := e.sim.User(e.sbApp, "hana")

			rep, err := e.sim.Push(ctx, e.sbApp, "hana", sandbox.PushRequest{Type: "text", Content: "在吗？a=b&c"})
			if err != nil {
				t.Fatal(err)
			}
			msg, err := e.messages.OpenMessage(e.rcv.next(t))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			wantID, _ := strconv.ParseInt(rep.Details["msg_id"].(string), 10, 64)
			if msg.FromUserName != u.AlipayOpenID || msg.MsgType != "text" || msg.Content != "在吗？a=b&c" || msg.MsgID != wantID ||
				msg.ToUserName != e.cfg.AppID || time.Since(time.Unix(msg.CreateTime, 0)) > time.Minute || msg.DedupKey == "" {
				t.Fatalf("message %+v", msg)
			}
			// The sender is the identity a login of the same user returns.
			code, _ := e.sim.MintCode(e.cfg.ID, "hana", "login")
			if login, err := e.client.Code2Session(ctx, code); err != nil || login.OpenID != msg.FromUserName {
				t.Fatalf("login %+v (%v) vs sender %s", login, err, msg.FromUserName)
			}
			if msg.Fields["notify_id"] == nil || msg.Fields["msg_method"] != alipay.UserMessageMethod || msg.Fields["from_user_id"] != u.AlipayUserID {
				t.Fatalf("fields %v", msg.Fields)
			}

			// A re-sent message keeps its de-duplication key.
			keys := map[string]bool{}
			for range 2 {
				if _, err := e.sim.Push(ctx, e.sbApp, "hana", sandbox.PushRequest{Type: "event", MsgID: 42, CreateTime: 1714036504, SessionFrom: "cart"}); err != nil {
					t.Fatal(err)
				}
				m, err := e.messages.OpenMessage(e.rcv.next(t))
				if err != nil {
					t.Fatal(err)
				}
				if m.MsgType != "event" || m.Event != "user_enter_tempsession" || m.SessionFrom != "cart" || m.CreateTime != 1714036504 || m.MsgID != 42 {
					t.Fatalf("event %+v", m)
				}
				keys[m.DedupKey] = true
			}
			if len(keys) != 1 {
				t.Fatalf("dedup keys %v", keys)
			}
			if _, err := e.sim.Push(ctx, e.sbApp, "hana", sandbox.PushRequest{Type: "miniprogrampage", Title: "t", PagePath: "pages/a", ThumbMediaID: "m1"}); err != nil {
				t.Fatal(err)
			}
			if m, err := e.messages.OpenMessage(e.rcv.next(t)); err != nil || m.Title != "t" || m.PagePath != "pages/a" || m.ThumbMediaID != "m1" {
				t.Fatalf("miniprogrampage %+v, %v", m, err)
			}
			if _, err := e.sim.Push(ctx, e.sbApp, "hana", sandbox.PushRequest{Type: "image"}); err != nil {
				t.Fatal(err)
			}
			if m, err := e.messages.OpenMessage(e.rcv.next(t)); err != nil || m.MsgType != "image" || m.MediaID == "" {
				t.Fatalf("image %+v, %v", m, err)
			}

			faults := []struct {
				name   string
				f      sandbox.Faults
				reason webhooks.RejectReason
			}{
				{"bad signature", sandbox.Faults{BadSignature: true}, webhooks.RejectBadSignature},
				{"foreign app", sandbox.Faults{ForeignAppID: true}, webhooks.RejectForeignApp},
				{"stale", sandbox.Faults{StaleTimestamp: true}, webhooks.RejectStaleTimestamp},
				{"truncated", sandbox.Faults{Truncate: true}, ""},
			}
			if withAES {
				faults = append(faults, struct {
					name   string
					f      sandbox.Faults
					reason webhooks.RejectReason
				}{"tampered ciphertext", sandbox.Faults{TamperCiphertext: true}, webhooks.RejectBadCiphertext})
			}
			for _, c := range faults {
				if _, err := e.sim.Push(ctx, e.sbApp, "hana", sandbox.PushRequest{Type: "text", Content: "x", Faults: c.f}); err != nil {
					t.Fatal(err)
				}
				_, err := e.messages.OpenMessage(e.rcv.next(t))
				if got := rejected(t, err); c.reason != "" && got != c.reason {
					t.Errorf("%s: %s (%v), want %s", c.name, got, err, c.reason)
				}
			}
			if withAES {
				// A verifier without the key cannot read encrypted content.
				plain := *e.cfg
				plain.Messages.AESKey = ""
				v, err := alipay.NewMessageVerifier(&plain, e.opts)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.sim.Push(ctx, e.sbApp, "hana", sandbox.PushRequest{Type: "text", Content: "x"}); err != nil {
					t.Fatal(err)
				}
				if _, err := v.OpenMessage(e.rcv.next(t)); rejected(t, err) != webhooks.RejectBadCiphertext {
					t.Fatalf("encrypted push without a key: %v", err)
				}
			}
		})
	}
}

// encryptContent is Alipay's content encryption, written here for crafted
// messages: AES-CBC, zero IV, PKCS#7, base64.
func encryptContent(t *testing.T, key, plain []byte) string {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	buf := append(append([]byte{}, plain...), make([]byte, pad)...)
	for i := len(plain); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, make([]byte, aes.BlockSize)).CryptBlocks(buf, buf)
	return base64.StdEncoding.EncodeToString(buf)
}

func TestMessageShapes(t *testing.T) {
	t.Parallel()
	e := setup(t, true)
	key := e.sbApp.Alipay.AlipayKey
	aesKey, _ := base64.StdEncoding.DecodeString(e.cfg.Messages.AESKey)
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	envelope := func(biz string) url.Values {
		return url.Values{"notify_id": {"nid-1"}, "utc_timestamp": {now}, "msg_method": {alipay.UserMessageMethod},
			"app_id": {e.cfg.AppID}, "version": {"1.1"}, "charset": {"utf-8"}, "sign_type": {"RSA2"}, "biz_content": {biz}}
	}
	bizFor := func(to string) string {
		return `{"msg_id":"m-abc","msg_type":"text","from_user_id":"2088000000000001","to_app_id":"` + to + `","content":"hi"}`
	}
	cases := []struct {
		name   string
		form   func() url.Values
		reason webhooks.RejectReason
		check  func(t *testing.T, m *webhooks.Message)
	}{
		{"signed with sign_type", func() url.Values { v := envelope(bizFor(e.cfg.AppID)); signForm(t, key, v, "sign"); return v }, "",
			func(t *testing.T, m *webhooks.Message) {
				if m.FromUserName != "2088000000000001" || m.MsgID != 0 || m.DedupKey == "" || m.Content != "hi" {
					t.Fatalf("message %+v", m)
				}
			}},
		{"signed without sign_type", func() url.Values {
			v := envelope(bizFor(e.cfg.AppID))
			signForm(t, key, v, "sign", "sign_type")
			return v
		}, "", nil},
		{"encrypted", func() url.Values {
			v := envelope(encryptContent(t, aesKey, []byte(bizFor(e.cfg.AppID))))
			v.Set("encrypt_type", "AES")
			signForm(t, key, v, "sign")
			return v
		}, "", nil},
		{"other msg_method", func() url.Values {
			v := envelope(`{"order_id":"1"}`)
			v.Set("msg_method", "alipay.open.mini.order.changed")
			signForm(t, key, v, "sign")
			return v
		}, "", func(t *testing.T, m *webhooks.Message) {
			if m.MsgType != "event" || m.Event != "alipay.open.mini.order.changed" || m.Fields["order_id"] != "1" || m.DedupKey != "alipay:notify:nid-1" {
				t.Fatalf("message %+v", m)
			}
		}},
		{"signed by another key", func() url.Values {
			v := envelope(bizFor(e.cfg.AppID))
			signForm(t, mustKey(t), v, "sign")
			return v
		}, webhooks.RejectBadSignature, nil},
		{"unsigned", func() url.Values { return envelope(bizFor(e.cfg.AppID)) }, webhooks.RejectMissingSignature, nil},
		{"other encrypt_type", func() url.Values {
			v := envelope(bizFor(e.cfg.AppID))
			v.Set("encrypt_type", "SM4")
			signForm(t, key, v, "sign")
			return v
		}, webhooks.RejectUnsupported, nil},
		{"biz not JSON", func() url.Values { v := envelope("hello"); signForm(t, key, v, "sign"); return v }, webhooks.RejectMalformed, nil},
		{"two JSON values", func() url.Values { v := envelope(`{} {}`); signForm(t, key, v, "sign"); return v }, webhooks.RejectMalformed, nil},
		{"no sender", func() url.Values {
			v := envelope(`{"msg_id":"1","msg_type":"text"}`)
			signForm(t, key, v, "sign")
			return v
		}, webhooks.RejectMalformed, nil},
		{"foreign to_app_id", func() url.Values { v := envelope(bizFor("2021000000000009")); signForm(t, key, v, "sign"); return v },
			webhooks.RejectForeignApp, nil},
		{"no utc_timestamp", func() url.Values {
			v := envelope(bizFor(e.cfg.AppID))
			v.Del("utc_timestamp")
			signForm(t, key, v, "sign")
			return v
		}, webhooks.RejectMalformed, nil},
		{"future timestamp", func() url.Values {
			v := envelope(bizFor(e.cfg.AppID))
			v.Set("utc_timestamp", strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10))
			signForm(t, key, v, "sign")
			return v
		}, webhooks.RejectStaleTimestamp, nil},
	}
	for _, c := range cases {
		m, err := e.messages.OpenMessage(formRequest(c.form()))
		if c.reason != "" {
			if got := rejected(t, err); got != c.reason {
				t.Errorf("%s: %s (%v), want %s", c.name, got, err, c.reason)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.check != nil {
			c.check(t, m)
		}
	}

	if _, err := e.messages.VerifyURL(webhooks.Request{Method: http.MethodGet}); rejected(t, err) != webhooks.RejectUnsupported {
		t.Fatalf("VerifyURL: %v", err)
	}
	if ack := e.messages.Ack(); ack.Status != 200 || string(ack.Body) != "success" {
		t.Fatalf("ack %+v", ack)
	}
}

// A published RSA2 example of a message-style notification that signs
// sign_type too (Alipay's service-market order notification, from the test
// suite of Alipay's Node.js SDK). It is not a mini-program message, so it
// must pass the signature check and fail only on content.
const vectorMarketKey = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAk6DCsBIUhWriFohzRV8Fic6oQWNnLKKILNk97VU5qcHEuxYzCujKoyva5gy1170mFJw4IcgJF8AyS7iDUwzAwF4Pp9CpWxDhUhe7mdQJhjBmvTcPLGFFrzlj6unO5lAcbdwaxPUtSxOaNxPJGrTK/wnKQSbjTMMltp1J68q2Tfgrsn/NdZ6lrxO9rvmky8kowqaH5NjntyHO59jCGabMj5sI14z8N61wB/QuIJrDuzIPMPrSNbq0cOWcSCDG09oUHTp9fk7suDB8UiFcmVTXOvK3d4HbeX8V9YsEMxrwxEoYgRRj6K2qrC6oxw480cqf2ueumCmHg6xrcgkyXK81hwIDAQAB"

func marketForm() url.Values {
	v := url.Values{}
	for k, x := range map[string]string{
		"app_id": "2017122801303261", "charset": "UTF-8", "commodity_order_id": "2019030800000018079639", "contactor": "技术支持测试的公司",
		"merchant_pid": "2088721996721370", "method": "alipay.open.servicemarket.order.notify", "name": "技术支持测试的公司",
		"notify_id": "2019030800222102023008121054923345", "notify_time": "2019-03-08 10:20:23", "notify_type": "servicemarket_order_notify",
		"order_item_num": "1", "order_ticket": "29b1c37d99ab48c5bd5bdaeaeaefbB37", "order_time": "2019-03-08 10:20:08", "phone": "17826894615",
		"service_code": "58621634",
		"sign":         "MsK5SCw8oqLw4f0hiNSd5OVGXxBY3wnQeT8vn5PklJSZFWSZbK4hQbNvkp4ZezeXQH514cEv0ul6Qow8yh6e6yM06LfEL+EZjcpZ0nxzFGRNQ5qq2AUc1OaXQdk92AGvxh+Iq4NGpPQFBd4D8EBJa3NJd8+czMfQskceosOQFqUtLQMYa5DPs+VpN7VM5BdXjaVIuKn5d9Wm2B9dI9ObIM+YRySDkZZPv14DVmUvcrcqJfOR8aHvtSd7B4l92wUQPQgQKNcOQho7xOHS/Bk+Y74AZL2y7TkNmdDoq9OGsThuF5tDW9rI9nVwXxOtsuB+bstra+W7aw9x9DvkKgdSRw==",
		"sign_type":    "RSA2", "timestamp": "2019-03-08 10:20:23", "title": "麦禾商城模版", "total_price": "0.00", "version": "1.0",
	} {
		v.Set(k, x)
	}
	return v
}

func TestMessageSignaturePublishedVector(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	app := &config.App{ID: "market", Platform: config.Alipay, AppID: "2017122801303261", PrivateKey: k, AlipayPublicKey: parsePublicKey(t, vectorMarketKey)}
	v, err := alipay.NewMessageVerifier(app, adapters.Options{Endpoints: config.Endpoints{AlipayGateway: "http://127.0.0.1:1/gateway.do"}})
	if err != nil {
		t.Fatal(err)
	}
	// Its charset is "UTF-8", which is utf-8.
	if _, err := v.OpenMessage(formRequest(marketForm())); rejected(t, err) != webhooks.RejectMalformed {
		t.Fatalf("published example: %v, want it to verify and then lack the message fields", err)
	}
	tampered := marketForm()
	tampered.Set("total_price", "9.99")
	if _, err := v.OpenMessage(formRequest(tampered)); rejected(t, err) != webhooks.RejectBadSignature {
		t.Fatalf("tampered example: %v", err)
	}
}

// FuzzOpenMessage: no panics, only VerifyErrors, and nothing accepted
// without a valid signature.
func FuzzOpenMessage(f *testing.F) {
	alipayKey, _ := testenv.Key()
	appKey, _ := testenv.Key()
	aesKey := make([]byte, 16)
	app := &config.App{ID: "fuzz", Platform: config.Alipay, AppID: "2021000000000078", PrivateKey: appKey,
		AlipayPublicKey: &alipayKey.PublicKey, Messages: config.Messages{AESKey: base64.StdEncoding.EncodeToString(aesKey)}}
	v, err := alipay.NewMessageVerifier(app, adapters.Options{Endpoints: config.Endpoints{AlipayGateway: "http://127.0.0.1:1/gateway.do"}})
	if err != nil {
		f.Fatal(err)
	}
	seed := url.Values{"notify_id": {"n"}, "utc_timestamp": {"1714036504000"}, "msg_method": {alipay.UserMessageMethod},
		"app_id": {app.AppID}, "sign_type": {"RSA2"}, "biz_content": {`{"msg_id":"1","msg_type":"text","from_user_id":"2088000000000001","content":"x"}`}}
	signForm(f, alipayKey, seed, "sign")
	f.Add([]byte(seed.Encode()))
	f.Add([]byte("sign=AAAA&sign_type=RSA2&app_id=2021000000000078&biz_content=%7B%7D"))
	f.Add([]byte(marketForm().Encode()))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := v.OpenMessage(webhooks.Request{Method: http.MethodPost, Body: body})
		if err != nil {
			if _, ok := webhooks.AsVerifyError(err); !ok {
				t.Fatalf("error is not a VerifyError: %v", err)
			}
			return
		}
		form, perr := url.ParseQuery(string(body))
		if perr != nil || m == nil || (verifyForm(&alipayKey.PublicKey, form, "sign") != nil && verifyForm(&alipayKey.PublicKey, form, "sign", "sign_type") != nil) {
			t.Fatalf("accepted a body without a valid signature: %q", body)
		}
	})
}
