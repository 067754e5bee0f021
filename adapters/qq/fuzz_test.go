package qq

import (
	"crypto/md5"
	"encoding/hex"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/minigate/minigate/webhooks"
)

// referenceSign is the v2 MD5 rule written out a second way, so the fuzz
// target does not check sign with itself.
func referenceSign(fields map[string]string, key string) string {
	var parts []string
	for k, v := range fields {
		if k != "sign" && v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	slices.Sort(parts)
	sum := md5.Sum([]byte(strings.Join(append(parts, "key="+key), "&")))
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// FuzzParseNotification: whatever arrives, ParseNotification never panics,
// refuses with a *webhooks.VerifyError, and accepts only documents signed
// with the merchant's key.
func FuzzParseNotification(f *testing.F) {
	valid := signedBody(paidFields(), testAPIKey)
	f.Add(valid)
	f.Add(encodeXML(paidFields()))
	f.Add([]byte(`<!DOCTYPE xml [<!ENTITY a "b">]>` + string(valid)))
	f.Add([]byte(strings.ReplaceAll(string(valid), "<total_fee>888", "<total_fee><![CDATA[888]]>")))
	f.Add(valid[:len(valid)/2])
	f.Add([]byte(`<xml><sign></sign></xml>`))
	p := testPay(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := parse(t, p, body)
		if err != nil {
			if _, ok := webhooks.AsVerifyError(err); !ok {
				t.Fatalf("error %v is not a VerifyError", err)
			}
			return
		}
		fields, derr := decodeXML(body)
		if derr != nil {
			t.Fatalf("accepted a body the decoder refuses: %v", derr)
		}
		if referenceSign(fields, testAPIKey) != strings.ToUpper(fields["sign"]) {
			t.Fatalf("accepted a body not signed with the key: %q", body)
		}
		if n.Payload == nil || n.Payload.Transaction == nil || n.Payload.Transaction.MchID != testMchID || n.DedupKey == "" {
			t.Fatalf("accepted notification %+v", n)
		}
	})
}

// FuzzDecodeXML: the decoder never panics; what it accepts survives an
// encode/decode round trip, and is refused once a DOCTYPE precedes it.
func FuzzDecodeXML(f *testing.F) {
	f.Add([]byte(`<xml><a>1</a><b><![CDATA[x<y]]></b></xml>`))
	f.Add([]byte(`<?xml version="1.0"?><xml><a>&amp;&#x4E2D;</a></xml>`))
	f.Add([]byte(`<!DOCTYPE xml><xml/>`))
	f.Add([]byte(`<xml><a><b/></a></xml>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fields, err := decodeXML(body)
		if err != nil {
			return
		}
		again, err := decodeXML(encodeXML(fields))
		if err != nil {
			t.Fatalf("re-encoding %q: %v", fields, err)
		}
		if !maps.Equal(fields, again) {
			t.Fatalf("round trip changed %q into %q", fields, again)
		}
		if _, err := decodeXML(append([]byte("<!DOCTYPE xml>"), body...)); err == nil {
			t.Fatal("a DOCTYPE was accepted")
		}
	})
}
