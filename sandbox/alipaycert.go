package sandbox

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// Alipay's public-key certificate mode (公钥证书模式), simulated: a
// certificate authority with a root bundle (alipayRootCert.crt: an ECDSA
// root, which alipay_root_cert_sn leaves out, and two RSA roots) and an
// intermediate that issues the apps' certificates (appCertPublicKey) and
// Alipay's own (alipayCertPublicKey_RSA2.crt: leaf and intermediate). A
// certificate-mode app's requests must carry the serial numbers (SN) of
// its certificate and of the root bundle; answers carry alipay_cert_sn,
// the SN of the certificate whose key signed them. Alipay's certificate
// can be rotated (RotateAlipayCert) and every certificate ever issued to
// an app is served by alipay.open.app.alipaycert.download. ForgeAlipayCert
// signs with a certificate that copies the intermediate's name but was
// issued by another CA: same kind of SN, no chain to the root.
//
// The SN rule (MD5 of the issuer's RFC 2253 name and the decimal serial;
// for the root, the RSA-signed roots' SNs joined by "_") is computed here
// from the raw issuer name, independently of adapters/alipay, and checked
// against the published root-bundle vector and smartwalle's computation.

// alipayCertMethod is the certificate download method.
const alipayCertMethod = "alipay.open.app.alipaycert.download"

// alipayCertValidity is how long simulated certificates are valid.
const alipayCertValidity = 5 * 365 * 24 * time.Hour

// AlipayCerts is a certificate-mode app's certificates as Alipay holds
// them. Its methods are safe for concurrent use.
type AlipayCerts struct {
	// AppCertSN is the app certificate's SN (app_cert_sn).
	AppCertSN string
	// RootCertSN is the root bundle's SN (alipay_root_cert_sn).
	RootCertSN string
	// AppCertPEM, AlipayCertPEM and RootCertPEM are the files the merchant
	// downloads: appCertPublicKey_<app_id>.crt, alipayCertPublicKey_RSA2.crt
	// (leaf, then intermediate) and alipayRootCert.crt.
	AppCertPEM, AlipayCertPEM, RootCertPEM []byte
	// NotifyWithCertSN adds alipay_cert_sn to notifications, left out of
	// the signed content (smartwalle's reading). Alipay's documentation
	// does not say notifications carry it; by default they do not.
	NotifyWithCertSN bool

	mu      sync.Mutex
	current string                   // the SN of the certificate Alipay signs with
	issued  map[string]*alipayIssued // every certificate of Alipay's for the app, by SN
	// downloads counts certificate downloads, by SN.
	downloads map[string]int
}

// alipayIssued is one of Alipay's signing certificates.
type alipayIssued struct {
	key      *rsa.PrivateKey
	chainPEM []byte // leaf, then its issuer
}

// signer returns the key Alipay signs the app's answers and notifications
// with, and its certificate's SN ("" in public-key mode).
func (acc *AlipayAccount) signer() (*rsa.PrivateKey, string) {
	c := acc.Certs
	if c == nil {
		return acc.AlipayKey, ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issued[c.current].key, c.current
}

// CurrentSN is the SN of the certificate Alipay now signs with.
func (c *AlipayCerts) CurrentSN() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// Downloads reports how often the certificate with SN sn was downloaded.
func (c *AlipayCerts) Downloads(sn string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.downloads[sn]
}

// use makes a certificate Alipay's current one.
func (c *AlipayCerts) use(sn string, is *alipayIssued) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.issued[sn], c.current = is, sn
}

// download returns the chain of certificate sn, counting the download.
func (c *AlipayCerts) download(sn string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.downloads[sn]++
	is, ok := c.issued[sn]
	if !ok {
		return nil, false
	}
	return is.chainPEM, true
}

// alipayCA is the simulated Alipay certificate authority. There is one per
// process, as there is one Alipay.
type alipayCA struct {
	rootPEM   []byte
	rootSN    string
	issuer    *x509.Certificate // the intermediate that issues leaves
	issuerKey *rsa.PrivateKey
	issuerPEM []byte
}

var (
	theCAOnce sync.Once
	theCA     *alipayCA
	theCAErr  error
)

// alipayCertAuthority returns the process's CA, creating it with keys
// from key (nil: fresh 2048-bit keys) on first use.
func alipayCertAuthority(key func() (*rsa.PrivateKey, error)) (*alipayCA, error) {
	if key == nil {
		key = func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }
	}
	theCAOnce.Do(func() { theCA, theCAErr = newAlipayCA(key) })
	return theCA, theCAErr
}

func caName(cn string) pkix.Name {
	return pkix.Name{Country: []string{"CN"}, Organization: []string{"Ant Financial"},
		OrganizationalUnit: []string{"Certification Authority"}, CommonName: cn}
}

func newAlipayCA(key func() (*rsa.PrivateKey, error)) (*alipayCA, error) {
	now := time.Now()
	selfSigned := func(name string, pub, priv any) (*x509.Certificate, error) {
		tmpl := &x509.Certificate{
			SerialNumber: alipaySerial(), Subject: caName(name), NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(20 * alipayCertValidity), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
		if err != nil {
			return nil, fmt.Errorf("sandbox: alipay CA: %w", err)
		}
		return x509.ParseCertificate(der)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootKey, err := key()
	if err != nil {
		return nil, err
	}
	otherKey, err := key()
	if err != nil {
		return nil, err
	}
	issuerKey, err := key()
	if err != nil {
		return nil, err
	}
	e1, err := selfSigned("Ant Financial Certification Authority E1 sandbox", &ecKey.PublicKey, ecKey)
	if err != nil {
		return nil, err
	}
	r1, err := selfSigned("Ant Financial Certification Authority R1 sandbox", &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	g3, err := selfSigned("iTrusChina Class 2 Root CA - G3 sandbox", &otherKey.PublicKey, otherKey)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: alipaySerial(), Subject: caName("Ant Financial Certification Authority Class 2 R1 sandbox"),
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * alipayCertValidity), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r1, &issuerKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("sandbox: alipay CA: intermediate: %w", err)
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &alipayCA{issuer: issuer, issuerKey: issuerKey, issuerPEM: alipayPEM(issuer)}
	// The bundle's order is the real one's: a root alipay_root_cert_sn
	// leaves out first, then the RSA roots.
	ca.rootPEM = alipayPEM(e1, r1, g3)
	sns, err := AlipayRootCertSN(ca.rootPEM)
	if err != nil {
		return nil, err
	}
	ca.rootSN = sns
	return ca, nil
}

// alipaySerial returns a random positive 127-bit serial number.
func alipaySerial() *big.Int {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("sandbox: crypto/rand: " + err.Error())
	}
	b[0] &= 0x7f
	b[0] |= 0x20
	return new(big.Int).SetBytes(b)
}

// issue signs a leaf certificate for pub with the intermediate (or, for a
// forgery, with rogue under the intermediate's name).
func (ca *alipayCA) issue(pub *rsa.PublicKey, subject pkix.Name, rogue *ecdsa.PrivateKey) (*x509.Certificate, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: alipaySerial(), Subject: subject, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(alipayCertValidity), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	var (
		parent *x509.Certificate = ca.issuer
		signer any               = ca.issuerKey
	)
	if rogue != nil {
		fake := *ca.issuer
		fake.PublicKey = &rogue.PublicKey
		parent, signer = &fake, rogue
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("sandbox: alipay CA: issue: %w", err)
	}
	return x509.ParseCertificate(der)
}

// newAlipayCerts issues an app's certificate for appKey and Alipay's first
// certificate for alipayKey.
func newAlipayCerts(ca *alipayCA, appID, sellerID string, appKey, alipayKey *rsa.PrivateKey) (*AlipayCerts, *x509.Certificate, error) {
	appCert, err := ca.issue(&appKey.PublicKey, pkix.Name{Country: []string{"CN"}, Organization: []string{appID + "@sandbox"},
		OrganizationalUnit: []string{"Alipay"}, CommonName: sellerID + "-" + appID}, nil)
	if err != nil {
		return nil, nil, err
	}
	c := &AlipayCerts{
		AppCertPEM: alipayPEM(appCert), RootCertPEM: ca.rootPEM, RootCertSN: ca.rootSN,
		issued: map[string]*alipayIssued{}, downloads: map[string]int{},
	}
	if c.AppCertSN, err = alipayCertSN(appCert); err != nil {
		return nil, nil, err
	}
	sn, is, err := ca.alipayCert(alipayKey, sellerID, nil)
	if err != nil {
		return nil, nil, err
	}
	c.AlipayCertPEM = is.chainPEM
	c.use(sn, is)
	return c, appCert, nil
}

// alipayCert issues one of Alipay's signing certificates for key.
func (ca *alipayCA) alipayCert(key *rsa.PrivateKey, sellerID string, rogue *ecdsa.PrivateKey) (string, *alipayIssued, error) {
	cert, err := ca.issue(&key.PublicKey, pkix.Name{Country: []string{"CN"}, Organization: []string{"sandbox"},
		OrganizationalUnit: []string{"Alipay"}, CommonName: "支付宝(中国)网络技术有限公司-" + sellerID}, rogue)
	if err != nil {
		return "", nil, err
	}
	sn, err := alipayCertSN(cert)
	if err != nil {
		return "", nil, err
	}
	return sn, &alipayIssued{key: key, chainPEM: append(alipayPEM(cert), ca.issuerPEM...)}, nil
}

// RotateAlipayCert has Alipay sign app appID's answers and notifications
// with a new certificate for key (nil: a fresh key) and returns its SN;
// the older ones can still be downloaded.
func (s *Sandbox) RotateAlipayCert(appID string, key *rsa.PrivateKey) (string, error) {
	return s.newAlipaySigner(appID, key, false)
}

// ForgeAlipayCert has app appID's answers and notifications signed with a
// certificate that names Alipay's intermediate as its issuer but was
// signed by another key: its SN looks like any other, and it can be
// downloaded, but it does not chain to the root bundle. RotateAlipayCert
// ends the forgery.
func (s *Sandbox) ForgeAlipayCert(appID string, key *rsa.PrivateKey) (string, error) {
	return s.newAlipaySigner(appID, key, true)
}

func (s *Sandbox) newAlipaySigner(appID string, key *rsa.PrivateKey, forge bool) (string, error) {
	a := s.App(appID)
	if a == nil || a.Alipay == nil || a.Alipay.Certs == nil {
		return "", fmt.Errorf("sandbox: app %s is not an Alipay app in certificate mode", appID)
	}
	ca, err := alipayCertAuthority(nil)
	if err != nil {
		return "", err
	}
	if key == nil {
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return "", err
		}
	}
	var rogue *ecdsa.PrivateKey
	if forge {
		if rogue, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return "", err
		}
	}
	sn, is, err := ca.alipayCert(key, a.Alipay.SellerID, rogue)
	if err != nil {
		return "", err
	}
	a.Alipay.Certs.use(sn, is)
	return sn, nil
}

// alipayCertDownload serves alipay.open.app.alipaycert.download: the
// certificate chain with the SN asked for, base64 of its PEM, for any
// certificate Alipay issued to the app.
func (s *Sandbox) alipayCertDownload(c *alipayCall) (map[string]any, error) {
	sn, err := c.bizString("alipay_cert_sn")
	if err != nil {
		return nil, err
	}
	if sn == "" {
		return nil, missingArg("isv.missing-alipay-cert-sn", "alipay_cert_sn is required")
	}
	certs := c.app.Alipay.Certs
	if certs == nil {
		return nil, acqFault("CERT_NOT_EXIST", "the app uses public-key mode")
	}
	chain, ok := certs.download(sn)
	if !ok {
		return nil, acqFault("CERT_NOT_EXIST", "no Alipay certificate with this serial number")
	}
	return map[string]any{"alipay_cert_content": base64.StdEncoding.EncodeToString(chain)}, nil
}

// alipayCheckCertSNs checks a request's app_cert_sn and
// alipay_root_cert_sn: required and equal to the app's in certificate
// mode, absent in public-key mode. The sub_codes are the ones developers
// report (isv.app-cert-not-exist, invalid-alipay-root-cert-sn); the
// gateway's exact answer is not documented.
func alipayCheckCertSNs(a *App, p map[string][]string) error {
	get := func(k string) string {
		if v := p[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	certs := a.Alipay.Certs
	switch {
	case certs == nil && (get("app_cert_sn") != "" || get("alipay_root_cert_sn") != ""):
		return invalidArg("isv.app-cert-not-exist", "应用公钥证书不存在（应用为公钥模式）")
	case certs == nil:
		return nil
	case get("app_cert_sn") != certs.AppCertSN:
		return invalidArg("isv.app-cert-not-exist", "应用公钥证书不存在")
	case get("alipay_root_cert_sn") != certs.RootCertSN:
		return invalidArg("isv.invalid-alipay-root-cert-sn", "无效支付宝根证书序列号")
	}
	return nil
}

// alipayPEM encodes certificates as PEM, in order.
func alipayPEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // a bytes.Buffer write cannot fail
	}
	return b.Bytes()
}

// AlipayCertSN is a certificate's SN as Alipay computes it, from the
// certificate's raw issuer name: lowercase hex MD5 of the name in RFC
// 2253 form (last RDN first) followed by the serial number in decimal.
func AlipayCertSN(der []byte) (string, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "", err
	}
	return alipayCertSN(c)
}

func alipayCertSN(c *x509.Certificate) (string, error) {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(c.RawIssuer, &rdns); err != nil || len(rest) > 0 {
		return "", errors.New("sandbox: certificate issuer is not a name")
	}
	parts := make([]string, 0, len(rdns))
	for i := len(rdns) - 1; i >= 0; i-- {
		var atvs []string
		for _, atv := range rdns[i] {
			atvs = append(atvs, rfc2253Type(atv.Type)+"="+rfc2253Escape(fmt.Sprint(atv.Value)))
		}
		parts = append(parts, strings.Join(atvs, "+"))
	}
	sum := md5.Sum([]byte(strings.Join(parts, ",") + c.SerialNumber.Text(10)))
	return hex.EncodeToString(sum[:]), nil
}

// AlipayRootCertSN computes alipay_root_cert_sn from a root bundle: the
// SNs of the certificates signed with RSA (signature algorithm OID
// 1.2.840.113549.1.1.*, as Alipay's Java SDK decides), in file order,
// joined by "_". Blocks Go cannot parse (the SM2 root) are skipped.
func AlipayRootCertSN(bundle []byte) (string, error) {
	rsaPrefix := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1}
	var sns []string
	for rest := bundle; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		var outer struct {
			TBS    asn1.RawValue
			SigAlg pkix.AlgorithmIdentifier
			Sig    asn1.BitString
		}
		if _, err := asn1.Unmarshal(block.Bytes, &outer); err != nil {
			continue
		}
		oid := outer.SigAlg.Algorithm
		if len(oid) <= len(rsaPrefix) || !oid[:len(rsaPrefix)].Equal(rsaPrefix) {
			continue
		}
		sn, err := AlipayCertSN(block.Bytes)
		if err != nil {
			continue
		}
		sns = append(sns, sn)
	}
	if len(sns) == 0 {
		return "", errors.New("sandbox: no RSA-signed root certificate in the bundle")
	}
	return strings.Join(sns, "_"), nil
}

// rfc2253Type is an attribute type's RFC 2253 short name, or its dotted
// OID.
func rfc2253Type(oid asn1.ObjectIdentifier) string {
	names := map[string]string{
		"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.9": "STREET",
		"2.5.4.10": "O", "2.5.4.11": "OU", "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
	}
	if n, ok := names[oid.String()]; ok {
		return n
	}
	return oid.String()
}

// rfc2253Escape escapes an attribute value as RFC 2253 requires.
func rfc2253Escape(v string) string {
	var b strings.Builder
	for i, r := range v {
		switch {
		case strings.ContainsRune(`,+"\<>;`, r), r == '#' && i == 0, r == ' ' && (i == 0 || i == len(v)-1):
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
