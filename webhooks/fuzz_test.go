package webhooks_test

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the Postgres driver

	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/webhooks"
)

// FuzzPipelineRefusesUnsigned sends arbitrary message pushes (query and
// body) through the pipeline with the real WeChat codec. The store is a
// closed pool, so a push that passed verification would be answered 503
// (it reached the store); anything else must be refused with a 4xx. The
// property: nothing reaches the store unless its signature is valid (as
// computed here, independently), and nothing panics.
func FuzzPipelineRefusesUnsigned(f *testing.F) {
	const token, appID = "fuzz-token", "wx0123456789abcdef"
	// A plaintext-mode codec, so a signed plaintext push can reach the store;
	// the codec's own fuzz targets cover the encrypted modes.
	codec, err := wechat.NewMessageCodec(appID, token, "", 5*time.Minute, nil)
	if err != nil {
		f.Fatal(err)
	}
	closed := sqlx.NewDb(mustClosedDB(f), "postgres")
	p := webhooks.NewPipeline(closed, webhooks.Options{BodyLimit: 1 << 16, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	spec := webhooks.Spec[*webhooks.Message]{
		App: "fuzz", Kind: webhooks.KindMessages, Ack: codec.Ack(),
		Open: func(_ context.Context, req webhooks.Request) (webhooks.Opened[*webhooks.Message], error) {
			msg, err := codec.OpenMessage(req)
			if err != nil {
				return webhooks.Opened[*webhooks.Message]{}, err
			}
			return webhooks.OpenedMessage(msg), nil
		},
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	signedBody := []byte(`<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>7</MsgId></xml>`)
	// The property is not vacuous: a signed plaintext push does reach the store.
	signedReq := webhooks.Request{Method: "POST", Query: url.Values{"signature": {sign(token, ts, "42")}, "timestamp": {ts}, "nonce": {"42"}}, Body: signedBody}
	if rep := webhooks.Process(context.Background(), p, spec, signedReq); rep.Status != http.StatusServiceUnavailable {
		f.Fatalf("a signed push got %d %s, want 503 from the closed store", rep.Status, rep.Body)
	}
	f.Add("", ts, "1", "", []byte(`<xml><MsgType>text</MsgType></xml>`))
	f.Add(sign(token, ts, "42"), ts, "42", "", signedBody)
	f.Add(sign(token, ts, "42"), ts, "42", "deadbeef", []byte(`{"ToUserName":"gh_1","Encrypt":"AAAA"}`))
	f.Add("x", "y", "z", "w", []byte(`{"MsgType":"event","Event":"user_enter_tempsession"}`))
	f.Fuzz(func(t *testing.T, signature, timestamp, nonce, msgSignature string, body []byte) {
		q := url.Values{"signature": {signature}, "timestamp": {timestamp}, "nonce": {nonce}}
		if msgSignature != "" {
			q.Set("msg_signature", msgSignature)
			q.Set("encrypt_type", "aes")
		}
		req := webhooks.Request{Method: "POST", Query: q, Header: http.Header{}, Body: body, ReceivedAt: time.Now()}
		rep := webhooks.Process(context.Background(), p, spec, req)
		signed := strings.EqualFold(signature, sign(token, timestamp, nonce))
		switch {
		case rep.Status == http.StatusServiceUnavailable && !signed:
			t.Fatalf("an unsigned push reached the store (signature %q)", signature)
		case rep.Status == http.StatusOK:
			t.Fatalf("acknowledged a push that was not stored")
		case rep.Status != http.StatusServiceUnavailable && (rep.Status < 400 || rep.Status > 499):
			t.Fatalf("status %d", rep.Status)
		}
	})
}

// FuzzCleanText checks that cleaned text is storable (valid UTF-8, no NUL),
// that clean text is unchanged, and that cleaning is idempotent.
func FuzzCleanText(f *testing.F) {
	for _, s := range []string{"", "hello", "a\x00b", "\xff\xfe", "中文 ✓", "\xe4\xb8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := webhooks.CleanText(s)
		if !utf8.ValidString(c) || strings.ContainsRune(c, 0) {
			t.Fatalf("CleanText(%q) = %q: not storable", s, c)
		}
		if utf8.ValidString(s) && !strings.ContainsRune(s, 0) && c != s {
			t.Fatalf("CleanText changed clean text %q to %q", s, c)
		}
		if webhooks.CleanText(c) != c {
			t.Fatalf("CleanText is not idempotent on %q", s)
		}
	})
}

func sign(parts ...string) string {
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(sum[:])
}

// mustClosedDB is a pool that fails every query, as a database that is down.
func mustClosedDB(f *testing.F) *sql.DB {
	db, err := sql.Open("postgres", "postgres://127.0.0.1:1/closed?sslmode=disable")
	if err != nil {
		f.Fatal(err)
	}
	if err := db.Close(); err != nil {
		f.Fatal(err)
	}
	return db
}
