package wechat

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"github.com/minigate/minigate/webhooks"
)

const (
	testAppID = "wx1234567890abcdef"
	testToken = "t0ken-for-tests"
	testNow   = 1714036504
)

// testAESKey is a fixed EncodingAESKey (43 characters).
var testAESKey = strings.TrimRight(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a, 0xc3}, 16)), "=")

func testCodec(t testing.TB, aesKey string) *MessageCodec {
	t.Helper()
	c, err := NewMessageCodec(testAppID, testToken, aesKey, 0, func() time.Time { return time.Unix(testNow, 0) })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const (
	textXML  = `<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1714036500</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello <world>]]></Content><MsgId>24580000000000001</MsgId></xml>`
	textJSON = `{"ToUserName":"gh_0123456789ab","FromUserName":"oUser","CreateTime":1714036500,"MsgType":"text","Content":"hello <world>","MsgId":24580000000000001}`
)

// silenceperEncrypt encrypts msg for appID with silenceper's implementation.
func silenceperEncrypt(t testing.TB, appID string, msg []byte) string {
	t.Helper()
	enc, err := util.EncryptMsg([]byte("0123456789abcdef"), msg, appID, testAESKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(enc)
}

// pushRequest builds a signed push of plain in mode (plaintext,
// compatible, safe) with the given Encrypt value (ignored in plaintext).
func pushRequest(plain []byte, mode, enc string) webhooks.Request {
	ts, nonce := strconv.Itoa(testNow), "1514711492"
	q := url.Values{"signature": {messageSignature(testToken, ts, nonce)}, "timestamp": {ts}, "nonce": {nonce}, "openid": {"oUser"}}
	body := plain
	isJSON := bytes.HasPrefix(plain, []byte("{"))
	switch mode {
	case "safe":
		if isJSON {
			body = []byte(`{"ToUserName":"gh_0123456789ab","Encrypt":"` + enc + `"}`)
		} else {
			body = []byte(`<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[` + enc + `]]></Encrypt></xml>`)
		}
	case "compatible":
		if isJSON {
			body = append(append(bytes.TrimSuffix(plain, []byte("}")), `,"Encrypt":"`+enc+`"`...), '}')
		} else {
			body = append(append(bytes.TrimSuffix(plain, []byte("</xml>")), `<Encrypt><![CDATA[`+enc+`]]></Encrypt>`...), "</xml>"...)
		}
	}
	if mode != "plaintext" {
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", messageSignature(testToken, ts, nonce, enc))
	}
	return webhooks.Request{Method: "POST", Query: q, Body: body}
}

func TestMessageSignatureVector(t *testing.T) {
	t.Parallel()
	// protocols.md §1, the published URL-verification vector.
	if got := messageSignature("AAAAA", "1714036504", "1514711492"); got != "f464b24fc39322e44b38aa78f5edd27bd1441696" {
		t.Fatalf("signature = %s", got)
	}
	c, err := NewMessageCodec(testAppID, "AAAAA", "", 0, func() time.Time { return time.Unix(testNow, 0) })
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"signature": {"F464B24FC39322E44B38AA78F5EDD27BD1441696"}, "timestamp": {"1714036504"}, "nonce": {"1514711492"}, "echostr": {"echo-me 1"}}
	if echo, err := c.VerifyURL(webhooks.Request{Method: "GET", Query: q}); err != nil || echo != "echo-me 1" {
		t.Fatalf("VerifyURL = %q, %v", echo, err)
	}
}

func TestVerifyURLRejects(t *testing.T) {
	t.Parallel()
	c := testCodec(t, "")
	good := func() url.Values {
		return url.Values{"signature": {messageSignature(testToken, "1714036504", "1")}, "timestamp": {"1714036504"}, "nonce": {"1"}, "echostr": {"e"}}
	}
	tests := []struct {
		name   string
		edit   func(url.Values)
		reason webhooks.RejectReason
	}{
		{"no signature", func(q url.Values) { q.Del("signature") }, webhooks.RejectMissingSignature},
		{"no nonce", func(q url.Values) { q.Del("nonce") }, webhooks.RejectMissingSignature},
		{"wrong signature", func(q url.Values) { q.Set("signature", messageSignature("other", "1714036504", "1")) }, webhooks.RejectBadSignature},
		{"nonce changed", func(q url.Values) { q.Set("nonce", "2") }, webhooks.RejectBadSignature},
		{"stale", func(q url.Values) {
			q.Set("timestamp", "1714036100")
			q.Set("signature", messageSignature(testToken, "1714036100", "1"))
		}, webhooks.RejectStaleTimestamp},
		{"no echostr", func(q url.Values) { q.Del("echostr") }, webhooks.RejectMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q := good()
			tt.edit(q)
			_, err := c.VerifyURL(webhooks.Request{Method: "GET", Query: q})
			if ve, ok := webhooks.AsVerifyError(err); !ok || ve.Reason != tt.reason {
				t.Fatalf("err = %v, want reason %s", err, tt.reason)
			}
		})
	}
}

func TestOpenMessageModesAndFormats(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"xml", "json"} {
		for _, mode := range []string{"plaintext", "compatible", "safe"} {
			t.Run(mode+"/"+format, func(t *testing.T) {
				t.Parallel()
				plain := []byte(textXML)
				if format == "json" {
					plain = []byte(textJSON)
				}
				key := testAESKey
				if mode == "plaintext" {
					key = ""
				}
				c := testCodec(t, key)
				msg, err := c.OpenMessage(pushRequest(plain, mode, silenceperEncrypt(t, testAppID, plain)))
				if err != nil {
					t.Fatal(err)
				}
				if msg.ToUserName != "gh_0123456789ab" || msg.FromUserName != "oUser" || msg.CreateTime != 1714036500 ||
					msg.MsgType != "text" || msg.Content != "hello <world>" || msg.MsgID != 24580000000000001 {
					t.Fatalf("message = %+v", msg)
				}
				if len(msg.Fields) != 6 || msg.Fields["Encrypt"] != nil {
					t.Fatalf("fields = %v", msg.Fields)
				}
			})
		}
	}
}

func TestOpenMessageTrustsOnlyTheCiphertext(t *testing.T) {
	t.Parallel()
	c := testCodec(t, testAESKey)
	forged := strings.Replace(textXML, "hello <world>", "transfer everything", 1)
	req := pushRequest([]byte(forged), "compatible", silenceperEncrypt(t, testAppID, []byte(textXML)))
	msg, err := c.OpenMessage(req)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Content != "hello <world>" {
		t.Fatalf("content %q came from the plaintext copy", msg.Content)
	}
}

func TestDecryptCrossCheckWithSilenceper(t *testing.T) {
	t.Parallel()
	c := testCodec(t, testAESKey)
	for n := 0; n <= 100; n++ {
		msg := bytes.Repeat([]byte{byte('a' + n%26)}, n)
		got, err := c.decryptMessage(silenceperEncrypt(t, testAppID, msg))
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("len %d: decrypt = %q, %v", n, got, err)
		}
	}
	// The hand-built frames the rejection cases tamper with open when intact.
	got, err := c.decryptMessage(sealRaw(t, framed("hello", testAppID, 5, bytes.Repeat([]byte{21}, 21))))
	if err != nil || string(got) != "hello" {
		t.Fatalf("intact frame: %q, %v", got, err)
	}
}

// sealRaw encrypts an arbitrary plaintext with the test key (no padding
// added), to build ciphertexts silenceper would never produce.
func sealRaw(t testing.TB, plain []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(testAESKey + "=")
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out)
}

// framed builds random16 ‖ len ‖ msg ‖ appID with the given padding bytes.
func framed(msg, appID string, lenField uint32, pad []byte) []byte {
	var b bytes.Buffer
	b.WriteString("0123456789abcdef")
	_ = binary.Write(&b, binary.BigEndian, lenField)
	b.WriteString(msg)
	b.WriteString(appID)
	b.Write(pad)
	return b.Bytes()
}

func TestOpenMessageRejects(t *testing.T) {
	t.Parallel()
	plain := []byte(textXML)
	validEnc := silenceperEncrypt(t, testAppID, plain)
	// A frame of len 20+5+18 = 43 bytes needs 21 bytes of padding to 64.
	pad21 := bytes.Repeat([]byte{21}, 21)
	badPad := append(bytes.Repeat([]byte{21}, 20), 20)
	type edit func(*webhooks.Request)
	resign := func(enc string) edit {
		return func(r *webhooks.Request) {
			*r = pushRequest(plain, "safe", enc)
		}
	}
	tests := []struct {
		name   string
		codec  string // "" plaintext-only, else key
		req    webhooks.Request
		edit   edit
		reason webhooks.RejectReason
	}{
		{"signature", testAESKey, pushRequest(plain, "safe", validEnc), func(r *webhooks.Request) {
			r.Query.Set("signature", messageSignature("x", r.Query.Get("timestamp"), r.Query.Get("nonce")))
		}, webhooks.RejectBadSignature},
		{"missing signature", testAESKey, pushRequest(plain, "safe", validEnc), func(r *webhooks.Request) {
			r.Query.Del("signature")
		}, webhooks.RejectMissingSignature},
		{"msg_signature", testAESKey, pushRequest(plain, "safe", validEnc), func(r *webhooks.Request) {
			r.Query.Set("msg_signature", r.Query.Get("signature"))
		}, webhooks.RejectBadMsgSignature},
		{"missing msg_signature", testAESKey, pushRequest(plain, "compatible", validEnc), func(r *webhooks.Request) {
			r.Query.Del("msg_signature")
		}, webhooks.RejectMissingSignature},
		{"Encrypt swapped after signing", testAESKey, pushRequest(plain, "safe", validEnc), func(r *webhooks.Request) {
			other := pushRequest(plain, "safe", silenceperEncrypt(t, testAppID, []byte(textJSON)))
			r.Body = other.Body
		}, webhooks.RejectBadMsgSignature},
		{"ciphertext not base64", testAESKey, webhooks.Request{}, resign("!!notbase64!!"), webhooks.RejectBadCiphertext},
		{"ciphertext not a multiple of 32", testAESKey, webhooks.Request{}, resign(base64.StdEncoding.EncodeToString(make([]byte, 48))), webhooks.RejectBadCiphertext},
		{"ciphertext empty", testAESKey, webhooks.Request{}, resign(""), webhooks.RejectBadCiphertext},
		{"ciphertext byte flipped", testAESKey, webhooks.Request{}, func(r *webhooks.Request) {
			raw, _ := base64.StdEncoding.DecodeString(validEnc)
			raw[0] ^= 1 // flips the high byte of the length field
			resign(base64.StdEncoding.EncodeToString(raw))(r)
		}, webhooks.RejectBadCiphertext},
		{"padding byte 0", testAESKey, webhooks.Request{}, resign(sealRaw(t, framed("hello", testAppID, 5, append(bytes.Repeat([]byte{21}, 20), 0)))), webhooks.RejectBadCiphertext},
		{"padding bytes differ", testAESKey, webhooks.Request{}, resign(sealRaw(t, framed("hello", testAppID, 5, badPad))), webhooks.RejectBadCiphertext},
		{"padding over 32", testAESKey, webhooks.Request{}, resign(sealRaw(t, framed("hello", testAppID, 5, append(bytes.Repeat([]byte{21}, 20), 33)))), webhooks.RejectBadCiphertext},
		{"length beyond the plaintext", testAESKey, webhooks.Request{}, resign(sealRaw(t, framed("hello", testAppID, 25, pad21))), webhooks.RejectBadCiphertext},
		{"foreign app id", testAESKey, webhooks.Request{}, resign(silenceperEncrypt(t, "wxforeign000000000", plain)), webhooks.RejectForeignApp},
		{"app id prefix only", testAESKey, webhooks.Request{}, resign(silenceperEncrypt(t, testAppID[:10], plain)), webhooks.RejectForeignApp},
		{"no app id", testAESKey, webhooks.Request{}, resign(silenceperEncrypt(t, "", plain)), webhooks.RejectForeignApp},
		{"plaintext body with a key configured", testAESKey, pushRequest(plain, "plaintext", ""), nil, webhooks.RejectUnencrypted},
		{"decrypted body malformed", testAESKey, webhooks.Request{}, resign(silenceperEncrypt(t, testAppID, []byte("<xml><a>"))), webhooks.RejectMalformed},
		{"timestamp in the past", "", pushRequest(plain, "plaintext", ""), func(r *webhooks.Request) {
			ts := strconv.Itoa(testNow - 301)
			r.Query.Set("timestamp", ts)
			r.Query.Set("signature", messageSignature(testToken, ts, r.Query.Get("nonce")))
		}, webhooks.RejectStaleTimestamp},
		{"timestamp in the future", "", pushRequest(plain, "plaintext", ""), func(r *webhooks.Request) {
			ts := strconv.Itoa(testNow + 301)
			r.Query.Set("timestamp", ts)
			r.Query.Set("signature", messageSignature(testToken, ts, r.Query.Get("nonce")))
		}, webhooks.RejectStaleTimestamp},
		{"timestamp overflowing", "", pushRequest(plain, "plaintext", ""), func(r *webhooks.Request) {
			ts := "-9223372036854775808"
			r.Query.Set("timestamp", ts)
			r.Query.Set("signature", messageSignature(testToken, ts, r.Query.Get("nonce")))
		}, webhooks.RejectStaleTimestamp},
		{"timestamp not a number", "", pushRequest(plain, "plaintext", ""), func(r *webhooks.Request) {
			r.Query.Set("timestamp", "soon")
			r.Query.Set("signature", messageSignature(testToken, "soon", r.Query.Get("nonce")))
		}, webhooks.RejectMalformed},
		{"malformed XML", "", pushRequest([]byte(textXML[:60]), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"malformed JSON", "", pushRequest([]byte(textJSON[:60]), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"JSON with trailing data", "", pushRequest([]byte(textJSON+`{}`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"JSON array", "", pushRequest([]byte(`[`+textJSON+`]`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"neither XML nor JSON", "", pushRequest([]byte(`MsgType=text`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"empty body", "", pushRequest(nil, "plaintext", ""), nil, webhooks.RejectMalformed},
		{"DOCTYPE", "", pushRequest([]byte(`<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x "boom">]>`+strings.Replace(textXML, "hello <world>", "]]>&x;<![CDATA[", 1)), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"DOCTYPE inside the ciphertext", testAESKey, webhooks.Request{}, resign(silenceperEncrypt(t, testAppID, []byte(`<!DOCTYPE xml>`+textXML))), webhooks.RejectMalformed},
		{"undeclared entity", "", pushRequest([]byte(strings.Replace(textXML, "<![CDATA[hello <world>]]>", "&x;", 1)), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"non-UTF-8 encoding", "", pushRequest([]byte(`<?xml version="1.0" encoding="GBK"?>`+textXML), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"two roots", "", pushRequest([]byte(textXML+textXML), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"duplicate XML field", "", pushRequest([]byte(strings.Replace(textXML, "</xml>", "<MsgType>event</MsgType></xml>", 1)), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"duplicate JSON field", "", pushRequest([]byte(strings.Replace(textJSON, "}", `,"MsgType":"event"}`, 1)), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"no MsgType", "", pushRequest([]byte(`{"ToUserName":"gh","FromUserName":"o","CreateTime":1}`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"CreateTime not a number", "", pushRequest([]byte(`{"ToUserName":"gh","FromUserName":"o","CreateTime":"x","MsgType":"text"}`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"MsgId not an integer", "", pushRequest([]byte(`{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"text","MsgId":1.5}`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"Content not a string", "", pushRequest([]byte(`{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"text","Content":{"a":1}}`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"event without Event", "", pushRequest([]byte(`{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"event"}`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"encrypt_type=aes without Encrypt", testAESKey, pushRequest(plain, "plaintext", ""), func(r *webhooks.Request) {
			r.Query.Set("encrypt_type", "aes")
		}, webhooks.RejectMalformed},
		{"Encrypt not a string", testAESKey, pushRequest([]byte(`{"ToUserName":"gh","Encrypt":5}`), "plaintext", ""), nil, webhooks.RejectMalformed},
		{"unknown encrypt_type", testAESKey, pushRequest(plain, "plaintext", ""), func(r *webhooks.Request) {
			r.Query.Set("encrypt_type", "rot13")
		}, webhooks.RejectUnsupported},
		{"encrypted push without a key", "", pushRequest(plain, "safe", validEnc), nil, webhooks.RejectUnsupported},
		{"nested Encrypt", testAESKey, webhooks.Request{}, resign(silenceperEncrypt(t, testAppID, []byte(`{"Encrypt":"x"}`))), webhooks.RejectMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := testCodec(t, tt.codec)
			req := tt.req
			if req.Query == nil {
				req = pushRequest(plain, "safe", validEnc)
			} else {
				q := url.Values{}
				for k, v := range req.Query {
					q[k] = append([]string(nil), v...)
				}
				req.Query = q
			}
			if tt.edit != nil {
				tt.edit(&req)
			}
			msg, err := c.OpenMessage(req)
			ve, ok := webhooks.AsVerifyError(err)
			if !ok || ve.Reason != tt.reason {
				t.Fatalf("OpenMessage = %+v, %v; want reason %s", msg, err, tt.reason)
			}
			if strings.Contains(ve.Error(), testToken) || strings.Contains(ve.Error(), testAESKey) {
				t.Fatalf("detail leaks a secret: %v", ve)
			}
		})
	}
}

func TestOpenMessageTypes(t *testing.T) {
	t.Parallel()
	c := testCodec(t, "")
	tests := []struct {
		name  string
		body  string
		check func(*webhooks.Message) bool
	}{
		{"image XML", `<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[o]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://p/1]]></PicUrl><MediaId><![CDATA[m1]]></MediaId><MsgId>7</MsgId></xml>`,
			func(m *webhooks.Message) bool { return m.PicURL == "http://p/1" && m.MediaID == "m1" && m.MsgID == 7 }},
		{"miniprogrampage JSON", `{"ToUserName":"gh","FromUserName":"o","CreateTime":1,"MsgType":"miniprogrampage","MsgId":8,"Title":"T","AppId":"wxa","PagePath":"p/i?x=1","ThumbUrl":"http://t","ThumbMediaId":"tm"}`,
			func(m *webhooks.Message) bool {
				return m.Title == "T" && m.AppID == "wxa" && m.PagePath == "p/i?x=1" && m.ThumbURL == "http://t" && m.ThumbMediaID == "tm" && m.MsgID == 8
			}},
		{"user_enter_tempsession", `<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>2</CreateTime><MsgType>event</MsgType><Event>user_enter_tempsession</Event><SessionFrom>order-1</SessionFrom></xml>`,
			func(m *webhooks.Message) bool {
				return m.MsgType == "event" && m.Event == "user_enter_tempsession" && m.SessionFrom == "order-1" && m.MsgID == 0
			}},
		{"unknown event with nested fields (XML)", `<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>3</CreateTime><MsgType>event</MsgType><Event>wxa_media_check</Event><result><suggest>pass</suggest><label>100</label></result><detail><strategy>a</strategy></detail><detail><strategy>b</strategy></detail></xml>`,
			func(m *webhooks.Message) bool {
				r, _ := m.Fields["result"].(map[string]any)
				d, _ := m.Fields["detail"].([]any)
				return m.Event == "wxa_media_check" && r["suggest"] == "pass" && len(d) == 2 && d[1].(map[string]any)["strategy"] == "b"
			}},
		{"unknown event with nested fields (JSON)", `{"ToUserName":"gh","FromUserName":"o","CreateTime":3,"MsgType":"event","Event":"trade_manage_remind_access_api","msg":"hi","detail":[{"a":1}]}`,
			func(m *webhooks.Message) bool {
				d, _ := m.Fields["detail"].([]any)
				return m.Event == "trade_manage_remind_access_api" && m.Fields["msg"] == "hi" && len(d) == 1
			}},
		{"unknown message type", `{"ToUserName":"gh","FromUserName":"o","CreateTime":4,"MsgType":"voice","MediaId":"v1","MsgId":"9","Format":"amr"}`,
			func(m *webhooks.Message) bool {
				return m.MsgType == "voice" && m.MediaID == "v1" && m.MsgID == 9 && m.Fields["Format"] == "amr"
			}},
		{"large MsgId stays exact", `{"ToUserName":"gh","FromUserName":"o","CreateTime":4,"MsgType":"text","Content":"x","MsgId":9223372036854775807}`,
			func(m *webhooks.Message) bool {
				return m.MsgID == 9223372036854775807 && m.Fields["MsgId"] == json.Number("9223372036854775807")
			}},
		{"whitespace and comments around XML", "\n <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c --><xml>\n <ToUserName>gh</ToUserName>\n <FromUserName>o</FromUserName>\n <CreateTime>5</CreateTime>\n <MsgType>text</MsgType>\n <Content>  spaced  </Content>\n</xml>\n",
			func(m *webhooks.Message) bool { return m.Content == "  spaced  " && m.CreateTime == 5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg, err := c.OpenMessage(pushRequest([]byte(tt.body), "plaintext", ""))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(msg) {
				t.Fatalf("message = %+v, fields %v", msg, msg.Fields)
			}
		})
	}
}

func TestAck(t *testing.T) {
	t.Parallel()
	r := testCodec(t, "").Ack()
	if r.Status != 200 || string(r.Body) != "success" {
		t.Fatalf("ack = %+v", r)
	}
}

func TestNewMessageCodecRejectsBadSettings(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, appID, token, key string }{
		{"no app id", "", "t", ""},
		{"no token", "wx", "", ""},
		{"short key", "wx", "t", "abc"},
		{"key not base64", "wx", "t", strings.Repeat("!", 43)},
	} {
		if _, err := NewMessageCodec(tt.appID, tt.token, tt.key, 0, nil); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func BenchmarkOpenMessage(b *testing.B) {
	for _, mode := range []string{"plaintext", "safe"} {
		for _, format := range []string{"xml", "json"} {
			b.Run(mode+"/"+format, func(b *testing.B) {
				plain := []byte(textXML)
				if format == "json" {
					plain = []byte(textJSON)
				}
				// Plaintext mode has no EncodingAESKey: with one, a
				// plaintext push is refused (its body is unsigned).
				key := testAESKey
				if mode == "plaintext" {
					key = ""
				}
				c := testCodec(b, key)
				req := pushRequest(plain, mode, silenceperEncrypt(b, testAppID, plain))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.OpenMessage(req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
