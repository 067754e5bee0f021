package config

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// maxCertFileBytes bounds an Alipay certificate file; real ones are a few
// KiB (the root bundle, four certificates, about 5 KiB).
const maxCertFileBytes = 256 << 10

// alipayCertKeys are the certificate-mode keys, in the order errors name
// them.
var alipayCertKeys = []string{"app_cert_file", "alipay_cert_file", "alipay_root_cert_file"}

// validateAlipayTrust checks that the app has exactly one way to trust
// Alipay — the Alipay public key, or the three certificate files — and
// loads it. Fields already filled in code (sandbox mode, tests) are kept.
func (a *App) validateAlipayTrust() *keyErr {
	files := map[string]string{
		"app_cert_file": a.AppCertFile, "alipay_cert_file": a.AlipayCertFile, "alipay_root_cert_file": a.AlipayRootCertFile,
	}
	certMode := a.AppCert != nil || a.AppCertFile != "" || a.AlipayCertFile != "" || a.AlipayRootCertFile != ""
	keyMode := a.AlipayPublicKey != nil || a.AlipayPublicKeyFile != ""
	switch {
	case certMode && keyMode:
		return kerr("alipay_public_key_file", "set either alipay_public_key_file (public-key mode) or app_cert_file, alipay_cert_file and alipay_root_cert_file (certificate mode), not both")
	case !certMode && !keyMode:
		return kerr("alipay_public_key_file", "required for platform alipay (or app_cert_file, alipay_cert_file and alipay_root_cert_file in certificate mode)")
	case keyMode:
		if a.AlipayPublicKey == nil {
			k, err := loadPublicKey(a.AlipayPublicKeyFile)
			if err != nil {
				return kerr("alipay_public_key_file", "%v", err)
			}
			a.AlipayPublicKey = k
		}
		return nil
	}
	if a.AppCert == nil {
		for _, k := range alipayCertKeys {
			if files[k] == "" {
				return kerr(k, "required in certificate mode (app_cert_file, alipay_cert_file and alipay_root_cert_file go together)")
			}
		}
		certs, err := loadCerts(a.AppCertFile)
		if err != nil {
			return kerr("app_cert_file", "%v", err)
		}
		a.AppCert = certs[0]
		if a.AlipayCerts, err = loadCerts(a.AlipayCertFile); err != nil {
			return kerr("alipay_cert_file", "%v", err)
		}
		if a.AlipayRootCerts, err = loadCerts(a.AlipayRootCertFile); err != nil {
			return kerr("alipay_root_cert_file", "%v", err)
		}
	}
	return a.checkAlipayCerts()
}

// checkAlipayCerts checks the parsed certificates: the application
// certificate certifies the application key, the Alipay certificate holds
// an RSA key, and the root bundle has an RSA-signed root (the ones
// alipay_root_cert_sn is made of).
func (a *App) checkAlipayCerts() *keyErr {
	pub, err := certRSAKey(a.AppCert)
	switch {
	case err != nil:
		return kerr("app_cert_file", "%v", err)
	case a.PrivateKey != nil && !a.PrivateKey.PublicKey.Equal(pub):
		return kerr("app_cert_file", "does not certify the key of private_key_file")
	case len(a.AlipayCerts) == 0:
		return kerr("alipay_cert_file", "no certificate")
	}
	if _, err := certRSAKey(a.AlipayCerts[0]); err != nil {
		return kerr("alipay_cert_file", "%v", err)
	}
	for _, c := range a.AlipayRootCerts {
		if RSASigned(c) {
			return nil
		}
	}
	return kerr("alipay_root_cert_file", "no RSA-signed root certificate (is it alipayRootCert.crt?)")
}

// RSASigned reports whether c is signed with an RSA algorithm (OID
// 1.2.840.113549.1.1.*): the certificates of Alipay's root bundle that
// alipay_root_cert_sn is made of.
func RSASigned(c *x509.Certificate) bool {
	switch c.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.SHA256WithRSA, x509.SHA384WithRSA,
		x509.SHA512WithRSA, x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		return true
	}
	return false
}

func certRSAKey(c *x509.Certificate) (any, error) {
	if c == nil {
		return nil, errors.New("no certificate")
	}
	if c.PublicKeyAlgorithm != x509.RSA {
		return nil, fmt.Errorf("the certificate holds a %v key, not RSA", c.PublicKeyAlgorithm)
	}
	return c.PublicKey, nil
}

// loadCerts reads the PEM certificates in path, in file order. Blocks Go
// cannot parse are skipped (Alipay's root bundle holds an SM2 root), but
// at least one certificate must parse.
func loadCerts(path string) ([]*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) > maxCertFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxCertFileBytes)
	}
	certs, err := ParseCertificates(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// ParseCertificates parses the PEM CERTIFICATE blocks of raw, in order,
// skipping blocks Go's x509 cannot parse; it fails when none parses.
func ParseCertificates(raw []byte) ([]*x509.Certificate, error) {
	var (
		out     []*x509.Certificate
		skipped int
	)
	for rest := bytes.TrimSpace(raw); len(rest) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			skipped++
			continue
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		if skipped > 0 {
			return nil, fmt.Errorf("none of its %d certificates parses", skipped)
		}
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}
