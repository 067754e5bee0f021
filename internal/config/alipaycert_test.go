package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// certFiles writes a CA and certificates for Alipay's certificate mode:
// the app's certificate for appKey, Alipay's (leaf and CA), and a root
// bundle with an ECDSA root before the RSA one.
type certFiles struct {
	dir                              string
	app, alipay, root, ecdsaOnlyRoot string
	otherApp                         string // certifies another key
}

func writeCertFiles(t *testing.T, appKey *rsa.PrivateKey) certFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial := int64(1)
	mk := func(cn string, pub any, parent *x509.Certificate, signer any) *x509.Certificate {
		serial++
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: parent == nil, BasicConstraintsValid: true}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	root := mk("root", &caKey.PublicKey, nil, caKey)
	ecRoot := mk("ec root", &ecKey.PublicKey, nil, ecKey)
	alipayKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	otherKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	write := func(name string, certs ...*x509.Certificate) string {
		var b strings.Builder
		for _, c := range certs {
			b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return certFiles{
		dir:           dir,
		app:           write("app.crt", mk("app", &appKey.PublicKey, root, caKey)),
		otherApp:      write("other.crt", mk("other", &otherKey.PublicKey, root, caKey)),
		alipay:        write("alipay.crt", mk("alipay", &alipayKey.PublicKey, root, caKey), root),
		root:          write("root.crt", ecRoot, root),
		ecdsaOnlyRoot: write("ecroot.crt", ecRoot),
	}
}

func alipayDoc(priv, extra string) string {
	return `
database_url: "postgres://x@localhost/db"
secret_key: "` + strings.Repeat("s", 32) + `"
apps:
  - id: shop-ali
    platform: alipay
    app_id: "2021000000000000"
    private_key_file: "` + priv + `"
` + extra
}

func TestAlipayCertificateMode(t *testing.T) {
	priv, pub := writeKeys(t, t.TempDir())
	raw, _ := os.ReadFile(priv)
	block, _ := pem.Decode(raw)
	appKey, err := ParsePrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	f := writeCertFiles(t, appKey)
	files := func(app, alipay, root string) string {
		var b strings.Builder
		for k, v := range map[string]string{"app_cert_file": app, "alipay_cert_file": alipay, "alipay_root_cert_file": root} {
			if v != "" {
				b.WriteString("    " + k + `: "` + v + `"` + "\n")
			}
		}
		return b.String()
	}

	cfg, err := Parse([]byte(alipayDoc(priv, files(f.app, f.alipay, f.root))), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.App("shop-ali")
	if !a.AlipayCertMode() || a.AlipayPublicKey != nil || len(a.AlipayCerts) != 2 || len(a.AlipayRootCerts) != 2 ||
		a.AppCert.Subject.CommonName != "app" || a.AlipayRootCerts[0].Subject.CommonName != "ec root" {
		t.Fatalf("certificate-mode app: %+v", a)
	}
	if !RSASigned(a.AlipayRootCerts[1]) || RSASigned(a.AlipayRootCerts[0]) {
		t.Fatal("RSASigned misreads the roots' signature algorithms")
	}

	for _, c := range []struct {
		name, extra, key, msg string
	}{
		{"both modes", files(f.app, f.alipay, f.root) + `    alipay_public_key_file: "` + pub + `"` + "\n", "alipay_public_key_file", "not both"},
		{"neither mode", "", "alipay_public_key_file", "certificate mode"},
		{"no root bundle", files(f.app, f.alipay, ""), "alipay_root_cert_file", "go together"},
		{"no app certificate", files("", f.alipay, f.root), "app_cert_file", "go together"},
		{"no Alipay certificate", files(f.app, "", f.root), "alipay_cert_file", "go together"},
		{"app certificate of another key", files(f.otherApp, f.alipay, f.root), "app_cert_file", "does not certify"},
		{"root bundle without an RSA root", files(f.app, f.alipay, f.ecdsaOnlyRoot), "alipay_root_cert_file", "no RSA-signed root"},
		{"a key where a certificate belongs", files(pub, f.alipay, f.root), "app_cert_file", "no PEM certificate"},
		{"missing file", files(f.app, filepath.Join(f.dir, "nope.crt"), f.root), "alipay_cert_file", "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(alipayDoc(priv, c.extra)), env(nil))
			var ce *Error
			if !errors.As(err, &ce) || ce.App != "shop-ali" || ce.Key != c.key || !strings.Contains(ce.Msg, c.msg) {
				t.Fatalf("got %v, want app shop-ali, key %s, %q", err, c.key, c.msg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
		})
	}
}
