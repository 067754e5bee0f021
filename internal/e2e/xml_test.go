package e2e

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// Hostile XML preambles: a DOCTYPE with an internal subset that defines
// entities (billion laughs), an external entity (XXE), and an undeclared
// entity reference without any DOCTYPE.
const (
	laughs = `<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>`
	xxe    = `<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>`
)

// TestHostileXMLIsRefused posts XML with a DOCTYPE or entities to every
// place minigate parses XML from outside — WeChat and QQ message pushes in
// plaintext mode (whose signature does not cover the body, so only the
// parser stands in the way), the decrypted plaintext of a correctly signed
// and encrypted push, and QQ wallet payment notifications with a valid MD5
// sign — and checks that each is refused with a 4xx, stored nowhere and
// kept among the rejected callbacks.
func TestHostileXMLIsRefused(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "wxplain", Platform: sandbox.WeChat, MessageMode: "plaintext"},
		{ID: "qqplain", Platform: sandbox.QQ, MessageMode: "plaintext"},
		{ID: "wxsafe", Platform: sandbox.WeChat, MessageMode: "safe"},
		{ID: "qqpay", Platform: sandbox.QQ, Pay: true},
	}})
	push := func(ref, entity string) string {
		return `<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>` +
			`<CreateTime>` + strconv.FormatInt(time.Now().Unix(), 10) + `</CreateTime><MsgType><![CDATA[text]]></MsgType>` +
			`<Content>` + ref + entity + `</Content><MsgId>` + strconv.FormatInt(time.Now().UnixNano()%1e15, 10) + `</MsgId></xml>`
	}
	type attempt struct {
		name, app, kind string
		body            []byte
		query           url.Values
	}
	var attempts []attempt
	for _, app := range []string{"wxplain", "qqplain"} {
		a := e.App(app)
		for name, body := range map[string]string{
			"billion laughs":     laughs + push("", "&c;"),
			"external entity":    xxe + push("", "&xxe;"),
			"undeclared entity":  push("", "&xxe;"),
			"doctype, no entity": `<!DOCTYPE xml>` + push("plain", ""),
		} {
			attempts = append(attempts, attempt{app + " push: " + name, a.ID, "messages", []byte(body), signedQuery(a.Messages.Token, "")})
		}
	}
	safe := e.App("wxsafe")
	for name, inner := range map[string]string{
		"billion laughs inside the ciphertext":  laughs + push("", "&c;"),
		"external entity inside the ciphertext": xxe + push("", "&xxe;"),
	} {
		enc := encryptPush(t, safe.Messages.EncodingAESKey, safe.AppID, []byte(inner))
		q := signedQuery(safe.Messages.Token, enc)
		body := `<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[` + enc + `]]></Encrypt></xml>`
		attempts = append(attempts, attempt{"wxsafe push: " + name, safe.ID, "messages", []byte(body), q})
	}
	wallet := e.App("qqpay")
	for name, pre := range map[string]string{"billion laughs": laughs, "external entity": xxe} {
		attempts = append(attempts, attempt{"qq wallet notification: " + name, wallet.ID, "payments", qpayNotification(wallet, pre), nil})
	}

	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			path := "/callbacks/" + a.app + "/" + a.kind
			if a.query != nil {
				path += "?" + a.query.Encode()
			}
			r := e.Do(http.MethodPost, path, a.body, testenv.Header("Content-Type", "text/xml"))
			if r.Status < 400 || r.Status > 499 || strings.Contains(string(r.Body), "success") || strings.Contains(string(r.Body), "SUCCESS") {
				t.Fatalf("answered %d %q, want a 4xx refusal", r.Status, r.Body)
			}
		})
	}
	// Refused by the parsers, not for another reason (the signatures and
	// ciphertexts above are valid).
	var rejected []struct {
		Reason string `db:"reason"`
		Detail string `db:"detail"`
	}
	if err := e.DB.Select(&rejected, `SELECT reason, detail FROM rejected_callbacks`); err != nil {
		t.Fatal(err)
	}
	for _, r := range rejected {
		if r.Reason != "malformed" || !(strings.Contains(r.Detail, "DOCTYPE") || strings.Contains(r.Detail, "entity")) {
			t.Errorf("refused as %s (%s), want malformed for the declarations or entities", r.Reason, r.Detail)
		}
	}
	if n := count(t, e.DB, `SELECT count(*) FROM callbacks`); n != 0 {
		t.Errorf("%d hostile callbacks stored", n)
	}
	if n := count(t, e.DB, `SELECT count(*) FROM messages`); n != 0 {
		t.Errorf("%d hostile messages in the inbox", n)
	}
	if n := count(t, e.DB, `SELECT count(*) FROM rejected_callbacks`); n != len(attempts) {
		t.Errorf("%d rejected callbacks kept, want %d", n, len(attempts))
	}
}

// signedQuery is a push's query: signature over token, timestamp and nonce,
// and msg_signature over the Encrypt field too when there is one.
func signedQuery(token, encrypt string) url.Values {
	ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	sign := func(parts ...string) string {
		sort.Strings(parts)
		sum := sha1.Sum([]byte(strings.Join(parts, "")))
		return hex.EncodeToString(sum[:])
	}
	q := url.Values{"signature": {sign(token, ts, nonce)}, "timestamp": {ts}, "nonce": {nonce}}
	if encrypt != "" {
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", sign(token, ts, nonce, encrypt))
	}
	return q
}

// encryptPush encrypts msg the way WeChat does for safe mode:
// AES-256-CBC, IV the key's first 16 bytes, random16 ‖ len ‖ msg ‖ appid,
// PKCS#7 to 32 bytes.
func encryptPush(t *testing.T, encodingAESKey, appID string, msg []byte) string {
	t.Helper()
	key, err := config.DecodeEncodingAESKey(encodingAESKey)
	if err != nil {
		t.Fatal(err)
	}
	var p bytes.Buffer
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	p.Write(random)
	_ = binary.Write(&p, binary.BigEndian, uint32(len(msg)))
	p.Write(msg)
	p.WriteString(appID)
	n := 32 - p.Len()%32
	p.Write(bytes.Repeat([]byte{byte(n)}, n))
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := p.Bytes()
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, out)
	return base64.StdEncoding.EncodeToString(out)
}

// qpayNotification is a QQ wallet payment notification with a valid MD5
// sign, preceded by preamble and carrying an entity reference.
func qpayNotification(a *config.App, preamble string) []byte {
	fields := map[string]string{
		"appid": a.AppID, "mch_id": a.Pay.MchID, "nonce_str": "n0nce", "out_trade_no": "MGHOSTILE0001",
		"transaction_id": "1" + a.Pay.MchID + "0001", "trade_state": "SUCCESS", "total_fee": "1", "fee_type": "CNY",
		"attach": "&c;",
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var pairs []string
	for _, k := range keys {
		pairs = append(pairs, k+"="+fields[k])
	}
	sum := md5.Sum([]byte(strings.Join(pairs, "&") + "&key=" + a.Pay.APIKey))
	fields["sign"] = strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	b.WriteString(preamble + "<xml>")
	for k, v := range fields {
		fmt.Fprintf(&b, "<%s>%s</%s>", k, v, k)
	}
	b.WriteString("</xml>")
	return []byte(b.String())
}
