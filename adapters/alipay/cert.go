package alipay

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/smartwalle/alipay/v3"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
)

// Public-key certificate mode (公钥证书模式). Requests carry app_cert_sn
// and alipay_root_cert_sn (smartwalle adds them); answers carry
// alipay_cert_sn, the serial number of the Alipay certificate whose key
// signed them. minigate keeps the Alipay certificates it trusts in a
// certStore per app: the configured one, and those Alipay rotated to,
// downloaded with alipay.open.app.alipaycert.download when an answer or a
// notification names an unknown serial — at most once per
// CertRefreshInterval, and trusted only when they chain to the configured
// root bundle. smartwalle would download an unknown certificate itself,
// without checking its chain, without a rate limit and while holding its
// client's lock; minigate builds its SDK clients in sandbox mode (so the
// SDK never downloads) and makes the certificate known before the SDK
// verifies the answer.

// Certificate-mode limits.
const (
	// CertRefreshInterval is the least time between two certificate
	// downloads, so answers or notifications naming made-up serial numbers
	// cannot make minigate hammer the gateway.
	CertRefreshInterval = time.Minute
	// maxAlipayCerts bounds the Alipay certificates one app trusts.
	maxAlipayCerts = 16
	// maxAnswerBytes bounds a gateway answer read to find its
	// alipay_cert_sn; answers are small (bills are downloaded elsewhere).
	maxAnswerBytes = 4 << 20
	// certDownloadAPI is the certificate download method.
	certDownloadAPI = "alipay.open.app.alipaycert.download"
)

// CertSN is Alipay's serial number of a certificate: the lowercase hex MD5
// of the issuer's distinguished name (RFC 2253 order, most specific first,
// as Java's getIssuerX500Principal().getName()) followed by the serial
// number in decimal.
func CertSN(c *x509.Certificate) string {
	sum := md5.Sum([]byte(c.Issuer.String() + c.SerialNumber.String()))
	return hex.EncodeToString(sum[:])
}

// RootCertSN is alipay_root_cert_sn: the serial numbers of the root
// bundle's RSA-signed certificates, in file order, joined by "_".
func RootCertSN(roots []*x509.Certificate) string {
	var sns []string
	for _, c := range roots {
		if config.RSASigned(c) {
			sns = append(sns, CertSN(c))
		}
	}
	return strings.Join(sns, "_")
}

// certPEM encodes certificates as PEM, in order.
func certPEM(certs ...*x509.Certificate) string {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // writes to a buffer cannot fail
	}
	return b.String()
}

// certStore is one certificate-mode app's trusted Alipay certificates,
// shared by the app's adapters (login, payments, messages).
type certStore struct {
	appID string
	// configured is the SN of alipay_cert_file's certificate, the one
	// answers and notifications without alipay_cert_sn are verified with.
	configured string
	roots      *x509.CertPool
	// intermediates are the configured file's issuer certificates, which a
	// downloaded certificate may chain through.
	intermediates []*x509.Certificate
	dl            *alipay.Client // downloads; never verifies answers itself
	log           *slog.Logger

	mu      sync.RWMutex
	certs   map[string]*x509.Certificate // by SN
	order   []string                     // configured first, then downloads, oldest first
	clients []*alipay.Client             // SDK clients that verify with these certificates

	fetch       sync.Mutex // serialises downloads; guards lastAttempt
	lastAttempt time.Time
}

// stores holds each certificate-mode app's certStore, keyed by its
// *config.App, so the app's adapters share what was downloaded.
var stores sync.Map

// storeFor returns app's certStore, creating it with dl (an SDK client
// for the download call) when it is the first.
func storeFor(app *config.App, dl *alipay.Client, log *slog.Logger) *certStore {
	if s, ok := stores.Load(app); ok {
		return s.(*certStore)
	}
	leaf := app.AlipayCerts[0]
	s := &certStore{
		appID: app.AppID, configured: CertSN(leaf), roots: x509.NewCertPool(),
		intermediates: app.AlipayCerts[1:], dl: dl, log: log,
		certs: map[string]*x509.Certificate{CertSN(leaf): leaf},
	}
	s.order = []string{s.configured}
	for _, c := range app.AlipayRootCerts {
		s.roots.AddCert(c)
	}
	actual, _ := stores.LoadOrStore(app, s)
	return actual.(*certStore)
}

// attach makes sdk verify answers with every certificate the store
// trusts, now and later. The configured certificate is loaded last: the
// SDK verifies answers without alipay_cert_sn with the last one loaded.
func (s *certStore) attach(sdk *alipay.Client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sn := range s.order[1:] {
		if err := sdk.LoadAlipayCertPublicKey(certPEM(s.certs[sn])); err != nil {
			return err
		}
	}
	if err := sdk.LoadAlipayCertPublicKey(certPEM(s.certs[s.configured])); err != nil {
		return err
	}
	s.clients = append(s.clients, sdk)
	return nil
}

// key returns the key of the certificate with serial sn, if trusted.
func (s *certStore) key(sn string) (*rsa.PublicKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.certs[sn]
	if !ok {
		return nil, false
	}
	k, ok := c.PublicKey.(*rsa.PublicKey)
	return k, ok
}

// keys returns every trusted key: the configured certificate's first,
// then the downloaded ones, newest first.
func (s *certStore) keys() []*rsa.PublicKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sns := []string{s.order[0]}
	for i := len(s.order) - 1; i >= 1; i-- {
		sns = append(sns, s.order[i])
	}
	out := make([]*rsa.PublicKey, 0, len(sns))
	for _, sn := range sns {
		if k, ok := s.certs[sn].PublicKey.(*rsa.PublicKey); ok {
			out = append(out, k)
		}
	}
	return out
}

// ensure makes the certificate with serial sn trusted, downloading it if
// it is not (at most one download per CertRefreshInterval), and returns
// its key. A downloaded certificate is trusted only when its serial is sn
// and it chains to the root bundle.
func (s *certStore) ensure(ctx context.Context, sn string) (*rsa.PublicKey, bool) {
	if k, ok := s.key(sn); ok {
		return k, true
	}
	s.fetch.Lock()
	defer s.fetch.Unlock()
	if k, ok := s.key(sn); ok { // another caller just downloaded it
		return k, true
	}
	start := time.Now()
	if !s.lastAttempt.IsZero() && start.Sub(s.lastAttempt) < CertRefreshInterval {
		s.log.Debug("alipay: certificate download skipped: the last one was too recent", "app_id", s.appID, "alipay_cert_sn", sn)
		return nil, false
	}
	s.lastAttempt = start
	cert, err := s.download(ctx, sn)
	adapters.Observe(Platform, certDownloadAPI, start, err)
	if err != nil {
		s.log.Warn("alipay: Alipay certificate not trusted", "app_id", s.appID, "alipay_cert_sn", sn, "err", err)
		return nil, false
	}
	if err := s.add(sn, cert); err != nil {
		s.log.Warn("alipay: Alipay certificate not loaded", "app_id", s.appID, "alipay_cert_sn", sn, "err", err)
		return nil, false
	}
	s.log.Info("alipay: trusting a new Alipay certificate", "app_id", s.appID, "alipay_cert_sn", sn,
		"not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	k, ok := s.key(sn)
	return k, ok
}

// download fetches and checks the certificate with serial sn.
func (s *certStore) download(ctx context.Context, sn string) (*x509.Certificate, error) {
	var rsp *alipay.CertDownloadRsp
	err := guard(func() (err error) {
		rsp, err = s.dl.CertDownload(ctx, alipay.CertDownload{AliPayCertSN: sn})
		return err
	})
	if err = check(certDownloadAPI, err, envelopeOf(rsp != nil, func() *alipay.Error { return &rsp.Error }), false); err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(rsp.AliPayCertContent)
	if err != nil {
		return nil, badResponse(certDownloadAPI, "alipay_cert_content is not base64", err)
	}
	certs, err := config.ParseCertificates(raw)
	if err != nil {
		return nil, badResponse(certDownloadAPI, "alipay_cert_content: "+err.Error(), err)
	}
	leaf := certs[0]
	if got := CertSN(leaf); got != sn {
		return nil, badResponse(certDownloadAPI, "the downloaded certificate's serial is "+got, nil)
	}
	if _, ok := leaf.PublicKey.(*rsa.PublicKey); !ok {
		return nil, badResponse(certDownloadAPI, "the downloaded certificate holds no RSA key", nil)
	}
	inter := x509.NewCertPool()
	for _, c := range append(certs[1:], s.intermediates...) {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: s.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, badResponse(certDownloadAPI, "the downloaded certificate does not chain to alipay_root_cert_file", err)
	}
	return leaf, nil
}

// add trusts cert under sn and loads it into every attached SDK client.
func (s *certStore) add(sn string, cert *x509.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) >= maxAlipayCerts {
		// Forget the oldest download; the configured certificate stays.
		delete(s.certs, s.order[1])
		s.order = append(s.order[:1], s.order[2:]...)
	}
	s.certs[sn] = cert
	s.order = append(s.order, sn)
	for _, c := range s.clients {
		// The configured certificate again last: it stays the SDK's default.
		if err := c.LoadAlipayCertPublicKey(certPEM(cert)); err != nil {
			return err
		}
		if err := c.LoadAlipayCertPublicKey(certPEM(s.certs[s.configured])); err != nil {
			return err
		}
	}
	return nil
}

// certPeek is the HTTP transport of a certificate-mode SDK client: it
// reads each gateway answer's alipay_cert_sn and has the store trust that
// certificate (downloading it if need be) before the SDK verifies the
// answer with it. Answers naming a certificate the store cannot trust are
// passed on unchanged; the SDK then refuses them.
type certPeek struct {
	next  http.RoundTripper
	store *certStore
}

func (p *certPeek) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) > maxAnswerBytes {
		return nil, fmt.Errorf("alipay: answer larger than %d bytes", maxAnswerBytes)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var envelope struct {
		CertSN string `json:"alipay_cert_sn"`
	}
	if json.Unmarshal(body, &envelope) == nil && envelope.CertSN != "" {
		p.store.ensure(req.Context(), envelope.CertSN)
	}
	return resp, nil
}
