package alipay_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/alipay"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

// TestCertSNVectors: the adapter's serial numbers of Alipay's real root
// bundle (the published alipay_root_cert_sn) and of the sandbox
// certificates smartwalle and gopay ship, as both libraries compute them.
func TestCertSNVectors(t *testing.T) {
	t.Parallel()
	read := func(name string) []byte {
		raw, err := os.ReadFile(filepath.Join("..", "..", "sandbox", "testdata", "alipaycert", name))
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	roots, err := config.ParseCertificates(read("smartwalle_alipayRootCert.crt"))
	if err != nil {
		t.Fatal(err)
	}
	// Go parses three of the four roots (not the SM2 one); two are RSA.
	if got := alipay.RootCertSN(roots); len(roots) != 3 || got != "687b59193f3f462dd5336e5abf83c5d8_02941eef3187dddf3d3b83462e1dfcf6" {
		t.Errorf("root bundle: %d certificates, SN %q", len(roots), got)
	}
	for file, want := range map[string]string{
		"smartwalle_appPublicCert.crt":    "9c51a0ddeb34866e5a331e613f57bf0f",
		"smartwalle_alipayPublicCert.crt": "05d88faef76d723019c5c14d3ecd014a",
		"gopay_appPublicCert.crt":         "f5476a255774929671073404f7af2b90",
		"gopay_alipayPublicCert.crt":      "b09baa7d1d5b198c713b230c5a6ec8e7",
	} {
		certs, err := config.ParseCertificates(read(file))
		if err != nil {
			t.Fatal(err)
		}
		if got := alipay.CertSN(certs[0]); got != want {
			t.Errorf("%s: %q, want %q", file, got, want)
		}
	}
}

// TestCertRotation: Alipay signs with a new certificate. The first
// notification or answer naming it makes the adapter download it once
// (all the app's adapters share it); a second rotation within
// CertRefreshInterval is not downloaded, and its answers are refused.
func TestCertRotation(t *testing.T) {
	t.Parallel()
	e := setupMode(t, false, true)
	ctx := context.Background()
	certs := e.sbApp.Alipay.Certs
	e.prepay(t, "rot_1", 100, "dora")

	// A notification naming the configured certificate, signed over
	// content that includes alipay_cert_sn (Alipay's documented rule).
	v := url.Values{"notify_id": {"n1"}, "notify_type": {"trade_status_sync"}, "app_id": {e.cfg.AppID},
		"trade_status": {"WAIT_BUYER_PAY"}, "out_trade_no": {"rot_1"}, "trade_no": {"2026"}, "total_amount": {"1.00"},
		"seller_id": {e.cfg.Pay.SellerID}, "sign_type": {"RSA2"}, "charset": {"utf-8"}, "alipay_cert_sn": {certs.CurrentSN()}}
	signForm(t, e.sbApp.Alipay.AlipayKey, v, "sign", "sign_type")
	if _, err := e.pay.ParseNotification(ctx, webhooks.Request{Method: "POST", Body: []byte(v.Encode())}); err != nil {
		t.Fatalf("a notification signed over alipay_cert_sn: %v", err)
	}

	k, _ := testenv.Key()
	sn, err := e.sim.RotateAlipayCert(e.sbApp.ID, k)
	if err != nil {
		t.Fatal(err)
	}
	certs.NotifyWithCertSN = true
	if _, err := e.sim.Pay(ctx, e.sbApp, "rot_1", sandbox.Faults{}); err != nil {
		t.Fatal(err)
	}
	n, err := e.pay.ParseNotification(ctx, e.rcv.next(t))
	if err != nil || n.Payload.Transaction.State != orders.PaymentPaid {
		t.Fatalf("notification signed with the rotated certificate: %+v %v", n, err)
	}
	if tx, err := e.pay.Query(ctx, "rot_1"); err != nil || tx.State != orders.PaymentPaid {
		t.Fatalf("query answered with the rotated certificate: %+v %v", tx, err)
	}
	code, _ := e.sim.MintCode(e.cfg.ID, "dora", "login")
	if _, err := e.client.Code2Session(ctx, code); err != nil {
		t.Fatalf("login answered with the rotated certificate: %v", err)
	}
	if got := certs.Downloads(sn); got != 1 {
		t.Fatalf("the rotated certificate was downloaded %d times, want 1", got)
	}

	// Rotated again at once: not downloaded (rate limit), not trusted.
	again, err := e.sim.RotateAlipayCert(e.sbApp.ID, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pay.Query(ctx, "rot_1"); reason(t, err) != adapters.ReasonBadResponse {
		t.Fatalf("an answer with a certificate not downloaded yet: %v", err)
	}
	if got := certs.Downloads(again); got != 0 {
		t.Fatalf("downloaded %d times within %v of the last download", got, alipay.CertRefreshInterval)
	}
}

// TestCertForgery: answers and notifications signed with a certificate
// that names Alipay's intermediate as issuer but does not chain to the
// root bundle are refused; the certificate is downloaded once, not on
// every answer.
func TestCertForgery(t *testing.T) {
	t.Parallel()
	e := setupMode(t, false, true)
	ctx := context.Background()
	certs := e.sbApp.Alipay.Certs
	e.prepay(t, "forge_1", 100, "eve")
	k, _ := testenv.Key()
	forged, err := e.sim.ForgeAlipayCert(e.sbApp.ID, k)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := e.pay.Query(ctx, "forge_1"); reason(t, err) != adapters.ReasonBadResponse {
			t.Fatalf("an answer signed with a forged certificate: %v", err)
		}
	}
	if got := certs.Downloads(forged); got != 1 {
		t.Fatalf("the forged certificate was downloaded %d times, want 1", got)
	}
	for _, named := range []bool{true, false} {
		certs.NotifyWithCertSN = named
		if _, err := e.sim.Pay(ctx, e.sbApp, "forge_1", sandbox.Faults{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pay.ParseNotification(ctx, e.rcv.next(t)); rejected(t, err) != webhooks.RejectBadSignature {
			t.Fatalf("a notification signed with the forged certificate (named: %v): %v", named, err)
		}
	}
	if got := certs.Downloads(forged); got != 1 {
		t.Fatalf("the forged certificate was downloaded %d times, want 1", got)
	}
}
