package wechat

import (
	"bytes"
	"net/url"
	"strconv"
	"testing"

	"github.com/silenceper/wechat/v2/util"

	"github.com/minigate/minigate/webhooks"
)

// FuzzOpenMessage feeds arbitrary bodies and query values to OpenMessage.
// It must never panic, never accept a request whose signature (or, for an
// encrypted body, msg_signature) is not the right one, and, given the right
// signatures, either refuse the body or return a message with its required
// fields.
func FuzzOpenMessage(f *testing.F) {
	ts := strconv.Itoa(testNow)
	enc := silenceperEncrypt(f, testAppID, []byte(textXML))
	for _, seed := range []struct {
		body                        string
		sig, msgSig, encType, nonce string
	}{
		{textXML, messageSignature(testToken, ts, "1"), "", "", "1"},
		{textJSON, messageSignature(testToken, ts, "1"), "", "", "1"},
		{string(pushRequest([]byte(textXML), "safe", enc).Body), "", "", "aes", "1514711492"},
		{string(pushRequest([]byte(textJSON), "compatible", enc).Body), "", "", "aes", "1514711492"},
		{`<!DOCTYPE x [<!ENTITY a "b">]><xml>&a;</xml>`, "", "", "", "1"},
		{`{"ToUserName":"gh","Encrypt":"` + enc + `"}`, "0000", "0000", "aes", "1"},
	} {
		f.Add([]byte(seed.body), ts, seed.nonce, seed.sig, seed.msgSig, seed.encType)
	}
	plainCodec := testCodec(f, "")
	aesCodec := testCodec(f, testAESKey)
	f.Fuzz(func(t *testing.T, body []byte, timestamp, nonce, signature, msgSignature, encryptType string) {
		q := url.Values{"timestamp": {timestamp}, "nonce": {nonce}, "signature": {signature},
			"msg_signature": {msgSignature}, "encrypt_type": {encryptType}}
		for _, c := range []*MessageCodec{plainCodec, aesCodec} {
			msg, err := c.OpenMessage(webhooks.Request{Method: "POST", Query: q, Body: body})
			if err == nil {
				if !equalMessageSignature(signature, messageSignature(testToken, timestamp, nonce)) {
					t.Fatalf("accepted a push with a wrong signature: %+v", msg)
				}
				if fields, perr := parsePushDocument(body); perr == nil && fields["Encrypt"] != nil {
					enc, _ := fields["Encrypt"].(string)
					if !equalMessageSignature(msgSignature, messageSignature(testToken, timestamp, nonce, string(bytes.TrimSpace([]byte(enc))))) {
						t.Fatalf("accepted an encrypted push with a wrong msg_signature: %+v", msg)
					}
				}
			} else if _, ok := webhooks.AsVerifyError(err); !ok {
				t.Fatalf("not a VerifyError: %v", err)
			}

			// Signed correctly, the body itself is what is fuzzed.
			signed := url.Values{"timestamp": {strconv.Itoa(testNow)}, "nonce": {nonce}, "encrypt_type": {encryptType}}
			signed.Set("signature", messageSignature(testToken, signed.Get("timestamp"), nonce))
			if fields, perr := parsePushDocument(body); perr == nil {
				if enc, ok := fields["Encrypt"].(string); ok {
					signed.Set("msg_signature", messageSignature(testToken, signed.Get("timestamp"), nonce, string(bytes.TrimSpace([]byte(enc)))))
				}
			}
			msg, err = c.OpenMessage(webhooks.Request{Method: "POST", Query: signed, Body: body})
			if err == nil && (msg.MsgType == "" || msg.FromUserName == "" || msg.ToUserName == "") {
				t.Fatalf("accepted a message without its required fields: %+v", msg)
			}
			if err != nil {
				if _, ok := webhooks.AsVerifyError(err); !ok {
					t.Fatalf("not a VerifyError: %v", err)
				}
			}
		}
	})
}

// FuzzDecrypt checks the decryptor: arbitrary input never panics and is
// accepted only when it opens to our app id; whatever silenceper encrypts
// for us opens to the same message; for another app id it is refused.
func FuzzDecrypt(f *testing.F) {
	f.Add(silenceperEncrypt(f, testAppID, []byte(textXML)), []byte(textXML))
	f.Add("", []byte{})
	f.Add("AAAA", []byte("x"))
	f.Add(silenceperEncrypt(f, "wxforeign", []byte("m")), bytes.Repeat([]byte{0}, 64))
	c := testCodec(f, testAESKey)
	f.Fuzz(func(t *testing.T, enc string, msg []byte) {
		out, err := c.decryptMessage(enc)
		if err != nil {
			if _, ok := webhooks.AsVerifyError(err); !ok {
				t.Fatalf("not a VerifyError: %v", err)
			}
		} else {
			// silenceper checks less (only the last padding byte), so
			// whatever we accept it must accept too, with the same message.
			_, want, serr := util.DecryptMsg(testAppID, enc, testAESKey)
			if serr != nil || !bytes.Equal(out, want) {
				t.Fatalf("decrypt %q = %q; silenceper %q, %v", enc, out, want, serr)
			}
		}

		ours := silenceperEncrypt(t, testAppID, msg)
		if out, err := c.decryptMessage(ours); err != nil || !bytes.Equal(out, msg) {
			t.Fatalf("round trip of %q: %q, %v", msg, out, err)
		}
		theirs := silenceperEncrypt(t, testAppID+"x", msg)
		if _, err := c.decryptMessage(theirs); err == nil {
			t.Fatal("accepted another app's ciphertext")
		}
	})
}
