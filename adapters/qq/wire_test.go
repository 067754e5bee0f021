package qq

import (
	"maps"
	"strings"
	"testing"
)

// TestSignPublishedVector checks the signer against the example of WeChat
// Pay v2's "签名生成算法" (安全规范) page, whose rule QQ wallet uses:
// stringA = appid=wxd930ea5d5a258f4f&body=test&device_info=1000&
// mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA, key
// 192006250b4c09247ec02edce69f6a2d → 9A0A8659F005D6984697E2CA0A9CF3B7.
func TestSignPublishedVector(t *testing.T) {
	t.Parallel()
	fields := map[string]string{
		"appid":       "wxd930ea5d5a258f4f",
		"mch_id":      "10000100",
		"device_info": "1000",
		"body":        "test",
		"nonce_str":   "ibuaiVcKdpRxkhJA",
	}
	const key = "192006250b4c09247ec02edce69f6a2d"
	const want = "9A0A8659F005D6984697E2CA0A9CF3B7"
	if got := sign(fields, key); got != want {
		t.Fatalf("sign = %s, want %s", got, want)
	}
	// The sign field itself and empty fields do not take part.
	withExtras := maps.Clone(fields)
	withExtras["sign"] = "ANYTHING"
	withExtras["attach"] = ""
	if got := sign(withExtras, key); got != want {
		t.Fatalf("sign with sign and empty fields = %s, want %s", got, want)
	}
	withExtras["sign"] = want
	if !signValid(withExtras, key) {
		t.Fatal("signValid rejects the published signature")
	}
	withExtras["sign"] = strings.ToLower(want)
	if !signValid(withExtras, key) {
		t.Fatal("signValid rejects the signature in lowercase hex")
	}
}

func TestSignValidRejects(t *testing.T) {
	t.Parallel()
	const key = "192006250b4c09247ec02edce69f6a2d"
	base := map[string]string{"appid": "1101", "mch_id": "1900000109", "total_fee": "100", "nonce_str": "n"}
	signed := maps.Clone(base)
	signed["sign"] = sign(base, key)
	tests := []struct {
		name   string
		mutate func(map[string]string)
		key    string
	}{
		{"no sign", func(f map[string]string) { delete(f, "sign") }, key},
		{"tampered amount", func(f map[string]string) { f["total_fee"] = "1" }, key},
		{"added field", func(f map[string]string) { f["attach"] = "x" }, key},
		{"wrong key", func(map[string]string) {}, "0" + key[1:]},
		{"truncated sign", func(f map[string]string) { f["sign"] = f["sign"][:31] }, key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := maps.Clone(signed)
			tt.mutate(f)
			if signValid(f, tt.key) {
				t.Fatal("signValid accepted it")
			}
		})
	}
}

func TestDecodeXML(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr string
	}{
		{name: "plain", in: `<xml><a>1</a><b>x y</b></xml>`, want: map[string]string{"a": "1", "b": "x y"}},
		{name: "cdata, declaration and whitespace",
			in:   "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml>\n <a><![CDATA[<b>&]]></a>\n <c></c>\n</xml>\n",
			want: map[string]string{"a": "<b>&", "c": ""}},
		{name: "escapes", in: `<xml><a>&lt;&amp;&#x4E2D;</a></xml>`, want: map[string]string{"a": "<&中"}},
		{name: "doctype", in: `<!DOCTYPE xml><xml><a>1</a></xml>`, wantErr: "declarations"},
		{name: "entity", in: `<!DOCTYPE xml [<!ENTITY e "v">]><xml><a>&e;</a></xml>`, wantErr: "declarations"},
		{name: "undefined entity", in: `<xml><a>&e;</a></xml>`, wantErr: "entity"},
		{name: "nested", in: `<xml><a><b>1</b></a></xml>`, wantErr: "nested"},
		{name: "duplicate", in: `<xml><a>1</a><a>2</a></xml>`, wantErr: "duplicate"},
		{name: "namespaced", in: `<xml xmlns:n="u"><n:a>1</n:a></xml>`, wantErr: "namespaced"},
		{name: "wrong root", in: `<root><a>1</a></root>`, wantErr: "root"},
		{name: "second root", in: `<xml></xml><xml></xml>`, wantErr: "after the root"},
		{name: "text outside fields", in: `<xml>oops<a>1</a></xml>`, wantErr: "outside"},
		{name: "unterminated", in: `<xml><a>1</a>`, wantErr: "xml"},
		{name: "empty", in: ``, wantErr: "no complete"},
		{name: "gbk", in: `<?xml version="1.0" encoding="GBK"?><xml><a>1</a></xml>`, wantErr: "GBK"},
		{name: "processing instruction", in: `<xml><?php x ?><a>1</a></xml>`, wantErr: "processing instruction"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeXML([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEncodeXMLRoundTrip(t *testing.T) {
	t.Parallel()
	in := map[string]string{"body": "a<b>&\"c\" ]]> 中文\n", "total_fee": "1", "empty": ""}
	out := encodeXML(in)
	if !strings.HasPrefix(string(out), "<xml><body>") {
		t.Fatalf("keys not sorted or root missing: %s", out)
	}
	got, err := decodeXML(out)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, in) {
		t.Fatalf("round trip: got %q, want %q", got, in)
	}
}

func TestTruncateUTF8(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 2, "ab"},
		{"中文字", 7, "中文"}, // 3 bytes per character: 7 cuts inside the third
		{"中文字", 6, "中文"},
		{"中", 2, ""},
	}
	for _, tt := range tests {
		if got := truncateUTF8(tt.in, tt.n); got != tt.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"203.0.113.7": "203.0.113.7",
		"":            fallbackClientIP,
		"2001:db8::1": fallbackClientIP,
		"not an ip":   fallbackClientIP,
	}
	for in, want := range tests {
		if got := clientIP(in); got != want {
			t.Errorf("clientIP(%q) = %q, want %q", in, got, want)
		}
	}
}
