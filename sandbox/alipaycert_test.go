package sandbox

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smartwalle/alipay/v3"

	"github.com/minigate/minigate/internal/config"
)

// TestAlipayCertSNVectors checks the simulator's serial-number rule on
// Alipay's real root bundle (the published alipay_root_cert_sn) and on the
// sandbox certificates smartwalle and gopay ship (their SNs as both
// libraries compute them), and against smartwalle's own computation.
func TestAlipayCertSNVectors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ file, want string }{
		{"smartwalle_alipayRootCert.crt", "687b59193f3f462dd5336e5abf83c5d8_02941eef3187dddf3d3b83462e1dfcf6"},
		{"smartwalle_appPublicCert.crt", "9c51a0ddeb34866e5a331e613f57bf0f"},
		{"smartwalle_alipayPublicCert.crt", "05d88faef76d723019c5c14d3ecd014a_191f9ccca4624632e4d66ce1417a00e0"},
		{"gopay_appPublicCert.crt", "f5476a255774929671073404f7af2b90"},
		{"gopay_alipayPublicCert.crt", "b09baa7d1d5b198c713b230c5a6ec8e7_191f9ccca4624632e4d66ce1417a00e0"},
	} {
		raw, err := os.ReadFile(filepath.Join("testdata", "alipaycert", c.file))
		if err != nil {
			t.Fatal(err)
		}
		// Every certificate of these files is RSA-signed except the root
		// bundle's SM2 and ECDSA roots, so the root rule gives each SN.
		got, err := AlipayRootCertSN(raw)
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.file, got, err, c.want)
		}
		if c.file == "smartwalle_alipayRootCert.crt" {
			if sw := sdkCertSNs(t, "", string(raw)); sw != c.want {
				t.Errorf("smartwalle computes alipay_root_cert_sn %q", sw)
			}
			continue
		}
		if sw := sdkCertSNs(t, string(raw), ""); sw != strings.Split(c.want, "_")[0] {
			t.Errorf("%s: smartwalle computes app_cert_sn %q", c.file, sw)
		}
	}
}

// sdkCertSNs returns the app_cert_sn (or, with root, alipay_root_cert_sn)
// smartwalle puts on a request.
func sdkCertSNs(t *testing.T, appCert, root string) string {
	t.Helper()
	k, err := testKey()
	if err != nil {
		t.Fatal(err)
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	c, err := alipay.New("2021000000000000", string(priv), false)
	if err != nil {
		t.Fatal(err)
	}
	if appCert != "" {
		if err := c.LoadAppCertPublicKey(appCert); err != nil {
			t.Fatal(err)
		}
	}
	if root != "" {
		_ = c.LoadAliPayRootCert(root)
	}
	vs, err := c.URLValues(alipay.TradeQuery{OutTradeNo: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if root != "" {
		return vs.Get("alipay_root_cert_sn")
	}
	return vs.Get("app_cert_sn")
}

// alipayCertSDK is a smartwalle client in certificate mode for cfg. It is
// built in the SDK's sandbox mode, so it never downloads certificates by
// itself.
func alipayCertSDK(t *testing.T, cfg *config.App, gateway string) *alipay.Client {
	t.Helper()
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(cfg.PrivateKey)})
	c, err := alipay.New(cfg.AppID, string(priv), false, alipay.WithSandboxGateway(gateway),
		alipay.WithTimeLocation(alipayZone), alipay.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.LoadAppCertPublicKey(string(alipayPEM(cfg.AppCert))); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadAlipayCertPublicKey(string(alipayPEM(cfg.AlipayCerts...))); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadAliPayRootCert(string(alipayPEM(cfg.AlipayRootCerts...))); err != nil {
		t.Fatal(err)
	}
	return c
}

func alipayCertSetup(t *testing.T) *alipayTestEnv {
	t.Helper()
	e := &alipayTestEnv{notes: make(chan alipayTestNote, 64)}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(raw))
		e.notes <- alipayTestNote{Path: r.URL.Path, CType: r.Header.Get("Content-Type"), Raw: raw, Form: form}
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(rcv.Close)
	e.sb = New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	e.gateway = serveTest(t, e.sb) + "/alipay/gateway.do"
	var err error
	e.app, e.cfg, err = NewAppPair(AppSpec{ID: "alicert-" + randomHex(3), Platform: Alipay, PublicURL: rcv.URL,
		Pay: true, Key: testKey, AlipayCertMode: true})
	if err != nil {
		t.Fatal(err)
	}
	e.sb.AddApp(e.app)
	e.sdk = alipayCertSDK(t, e.cfg, e.gateway)
	return e
}

// TestAlipayCertModeWithSDK: smartwalle in certificate mode against the
// simulator. Its app_cert_sn and alipay_root_cert_sn are accepted, its
// answer verification finds the certificate alipay_cert_sn names; after a
// rotation the answers name a certificate the SDK does not have, which
// the download API serves and which chains to the root bundle; a forged
// certificate does not.
func TestAlipayCertModeWithSDK(t *testing.T) {
	t.Parallel()
	e := alipayCertSetup(t)
	ctx := context.Background()
	certs := e.app.Alipay.Certs
	if e.cfg.AlipayPublicKey != nil || e.cfg.AppCert == nil || len(e.cfg.AlipayCerts) != 2 {
		t.Fatalf("config of a certificate-mode app: %+v", e.cfg)
	}
	if err := config.Finish(&config.Config{DatabaseURL: "postgres://x", SecretKey: strings.Repeat("k", 32),
		Sandbox: true, Apps: []*config.App{e.cfg}}); err != nil {
		t.Fatalf("the generated app does not pass config validation: %v", err)
	}
	if want := strings.Split(certs.RootCertSN, "_"); len(want) != 2 {
		t.Fatalf("root SN %q: want the two RSA roots, not the ECDSA one", certs.RootCertSN)
	}
	if got := sdkCertSNs(t, string(certs.AppCertPEM), ""); got != certs.AppCertSN {
		t.Fatalf("smartwalle's app_cert_sn %q, the simulator's %q", got, certs.AppCertSN)
	}
	if got := sdkCertSNs(t, "", string(certs.RootCertPEM)); got != certs.RootCertSN {
		t.Fatalf("smartwalle's alipay_root_cert_sn %q, the simulator's %q", got, certs.RootCertSN)
	}

	rsp := e.create(t, "CERT0001", "9.99")
	if rsp.TradeNo == "" {
		t.Fatalf("trade.create in certificate mode: %+v", rsp)
	}
	// The raw answer names the signing certificate.
	raw := e.rawCall(t, "alipay.trade.query", "out_trade_no", "CERT0001")
	if !strings.Contains(raw, `"alipay_cert_sn":"`+certs.CurrentSN()+`"`) {
		t.Fatalf("answer without alipay_cert_sn: %s", raw)
	}

	// Notifications are signed with the current certificate; with
	// NotifyWithCertSN they name it, and smartwalle's verification (which
	// leaves alipay_cert_sn out of the content) accepts them.
	if _, err := e.sb.Pay(ctx, e.app, "CERT0001", Faults{}); err != nil {
		t.Fatal(err)
	}
	if n := e.note(t); n.Form.Has("alipay_cert_sn") || e.sdk.VerifySign(ctx, n.Form) != nil {
		t.Fatalf("notification: %s", n.Raw)
	}
	certs.NotifyWithCertSN = true
	if _, err := e.sb.Pay(ctx, e.app, "CERT0001", Faults{}); err != nil {
		t.Fatal(err)
	}
	if n := e.note(t); n.Form.Get("alipay_cert_sn") != certs.CurrentSN() || e.sdk.VerifySign(ctx, n.Form) != nil {
		t.Fatalf("notification naming its certificate: %s", n.Raw)
	}

	// Rotation: the SDK (which does not download in sandbox mode) cannot
	// verify the next answer; the download API serves the new
	// certificate, which chains to the root, and with it the SDK can.
	old := certs.CurrentSN()
	k, _ := testKey()
	sn, err := e.sb.RotateAlipayCert(e.app.ID, k)
	if err != nil || sn == old || certs.CurrentSN() != sn {
		t.Fatalf("rotate: %q %v", sn, err)
	}
	if _, err := e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: "CERT0001"}); !errors.Is(err, alipay.ErrAliPublicKeyNotFound) {
		t.Fatalf("an answer signed with an unknown certificate: %v", err)
	}
	chain := e.download(t, sn)
	if err := verifyChain(chain, e.cfg.AlipayRootCerts); err != nil {
		t.Fatalf("the rotated certificate does not chain to the root bundle: %v", err)
	}
	if err := e.sdk.LoadAlipayCertPublicKey(string(alipayPEM(chain...))); err != nil {
		t.Fatal(err)
	}
	if q, err := e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: "CERT0001"}); err != nil || q.TradeStatus != alipay.TradeStatusSuccess {
		t.Fatalf("query after loading the rotated certificate: %+v %v", q, err)
	}
	if old := e.download(t, old); len(old) != 2 || certs.Downloads(sn) != 1 {
		t.Fatalf("the old certificate is no longer served, or downloads miscounted (%d)", certs.Downloads(sn))
	}

	// A forgery: same issuer name, another signer. Its SN looks like any
	// other and it is served, but it does not chain.
	forged, err := e.sb.ForgeAlipayCert(e.app.ID, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyChain(e.download(t, forged), e.cfg.AlipayRootCerts); err == nil {
		t.Fatal("a forged certificate chains to the root bundle")
	}
	if _, err := e.sb.RotateAlipayCert(e.app.ID, k); err != nil {
		t.Fatal(err)
	}

	// Unknown serials are refused by the download API.
	rawDL := e.rawCall(t, alipayCertMethod, "alipay_cert_sn", strings.Repeat("0", 32))
	if !strings.Contains(rawDL, `"sub_code":"CERT_NOT_EXIST"`) {
		t.Fatalf("download of an unknown certificate: %s", rawDL)
	}
}

// TestAlipayCertModeRequestChecks: requests of a certificate-mode app must
// carry its certificate's and the root bundle's SNs; a public-key-mode
// app's must not carry any.
func TestAlipayCertModeRequestChecks(t *testing.T) {
	t.Parallel()
	e := alipayCertSetup(t)
	keyMode := alipayTestSetup(t, false)
	for _, c := range []struct {
		name string
		env  *alipayTestEnv
		edit func(url.Values)
		sub  string
	}{
		{"no app_cert_sn", e, func(v url.Values) { v.Del("app_cert_sn") }, "isv.app-cert-not-exist"},
		{"wrong app_cert_sn", e, func(v url.Values) { v.Set("app_cert_sn", strings.Repeat("0", 32)) }, "isv.app-cert-not-exist"},
		{"no root SN", e, func(v url.Values) { v.Del("alipay_root_cert_sn") }, "isv.invalid-alipay-root-cert-sn"},
		{"wrong root SN", e, func(v url.Values) { v.Set("alipay_root_cert_sn", "687b59193f3f462dd5336e5abf83c5d8") }, "isv.invalid-alipay-root-cert-sn"},
		{"SNs from a public-key-mode app", keyMode, func(v url.Values) {
			v.Set("app_cert_sn", e.app.Alipay.Certs.AppCertSN)
			v.Set("alipay_root_cert_sn", e.app.Alipay.Certs.RootCertSN)
		}, "isv.app-cert-not-exist"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sdk := c.env.sdk
			if c.env == e {
				sdk = alipayCertSDK(t, e.cfg, e.gateway)
			}
			vs, err := sdk.URLValues(alipay.TradeQuery{OutTradeNo: "NOPE"})
			if err != nil {
				t.Fatal(err)
			}
			c.edit(vs)
			// Re-sign what was edited, so only the SN check can fail.
			vs.Del("sign")
			sig, err := sdk.SignValues(vs)
			if err != nil {
				t.Fatal(err)
			}
			vs.Set("sign", base64.StdEncoding.EncodeToString(sig))
			raw := postForm(t, c.env.gateway, vs)
			if !strings.Contains(raw, `"sub_code":"`+c.sub+`"`) {
				t.Fatalf("answer %s, want sub_code %s", raw, c.sub)
			}
		})
	}
}

// rawCall signs a request for method with the test's SDK and returns the
// gateway's raw answer.
func (e *alipayTestEnv) rawCall(t *testing.T, method, key, value string) string {
	t.Helper()
	p := alipay.NewPayload(method)
	p.AddBizField(key, value)
	vs, err := e.sdk.URLValues(p)
	if err != nil {
		t.Fatal(err)
	}
	return postForm(t, e.gateway, vs)
}

// download fetches certificate sn through the download API.
func (e *alipayTestEnv) download(t *testing.T, sn string) []*x509.Certificate {
	t.Helper()
	rsp, err := e.sdk.CertDownload(context.Background(), alipay.CertDownload{AliPayCertSN: sn})
	if err != nil {
		t.Fatalf("download %s: %v", sn, err)
	}
	raw, err := base64.StdEncoding.DecodeString(rsp.AliPayCertContent)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := config.ParseCertificates(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := alipayCertSN(certs[0]); got != sn {
		t.Fatalf("downloaded certificate %s for %s", got, sn)
	}
	return certs
}

func verifyChain(chain, roots []*x509.Certificate) error {
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range roots {
		rp.AddCert(c)
	}
	for _, c := range chain[1:] {
		ip.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func postForm(t *testing.T, gateway string, vs url.Values) string {
	t.Helper()
	resp, err := http.PostForm(gateway, vs)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

// TestWriteConfigCertMode: a certificate-mode app written as a config file
// (three certificate files) loads back in certificate mode with the same
// certificates.
func TestWriteConfigCertMode(t *testing.T) {
	t.Parallel()
	_, cfgApp, err := NewAppPair(AppSpec{ID: "alicfg", Platform: Alipay, PublicURL: "http://127.0.0.1:1", Pay: true, Key: testKey, AlipayCertMode: true})
	if err != nil {
		t.Fatal(err)
	}
	path, err := WriteConfig(t.TempDir(), ConfigFile{Listen: "127.0.0.1:1", DatabaseURL: "postgres://x", PublicURL: "http://127.0.0.1:1",
		APIKey: strings.Repeat("k", 16), SandboxURL: "http://127.0.0.1:2/sandbox", Apps: []*config.App{cfgApp}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.App("alicfg")
	if !got.AlipayCertMode() || got.AppCertFile == "" || got.AlipayPublicKeyFile != "" || !got.AppCert.Equal(cfgApp.AppCert) ||
		len(got.AlipayCerts) != 2 || !got.AlipayCerts[0].Equal(cfgApp.AlipayCerts[0]) || len(got.AlipayRootCerts) != 3 {
		t.Fatalf("loaded app: %+v", got)
	}
}
