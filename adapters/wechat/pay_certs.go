package wechat

import (
	"context"
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/downloader"

	"github.com/minigate/minigate/adapters"
)

// Platform-certificate refresh limits.
const (
	// PayCertRefreshInterval is the least time between two downloads
	// caused by an unknown serial once certificates are known, so forged
	// serials cannot make minigate hammer /v3/certificates.
	PayCertRefreshInterval = time.Minute
	// PayCertRetryInterval is the least time between two download attempts
	// while no certificate could be downloaded yet.
	PayCertRetryInterval = 5 * time.Second
)

// payCertStore holds WeChat Pay platform certificates for the SDK's
// verifiers (it is a core.CertificateGetter). It downloads them with
// wechatpay-go's downloader, through minigate's HTTP client, lazily: on
// first need, and again when a serial it does not know shows up. It runs
// no background goroutine. Its rate limits use the system clock, not the
// adapter's (possibly simulated) one: they are about real load.
type payCertStore struct {
	client   *core.Client
	apiV3Key string
	log      *slog.Logger

	dl sync.Mutex // serialises downloads; guards lastAttempt

	lastAttempt time.Time

	mu sync.RWMutex
	d  *downloader.CertificateDownloader // nil until a download succeeded
}

var _ core.CertificateGetter = (*payCertStore)(nil)

func newPayCertStore(client *core.Client, apiV3Key string, log *slog.Logger) *payCertStore {
	return &payCertStore{client: client, apiV3Key: apiV3Key, log: log}
}

func (c *payCertStore) current() *downloader.CertificateDownloader {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.d
}

func (c *payCertStore) lookup(ctx context.Context, serial string) (*x509.Certificate, bool) {
	d := c.current()
	if d == nil {
		return nil, false
	}
	return d.Get(ctx, serial)
}

// Get returns the certificate with serial, downloading certificates when
// it is not known (at most once per PayCertRefreshInterval).
func (c *payCertStore) Get(ctx context.Context, serial string) (*x509.Certificate, bool) {
	if cert, ok := c.lookup(ctx, serial); ok {
		return cert, true
	}
	c.refresh(ctx, serial)
	return c.lookup(ctx, serial)
}

// GetAll returns every known certificate, downloading them on first use.
func (c *payCertStore) GetAll(ctx context.Context) map[string]*x509.Certificate {
	if c.current() == nil {
		c.refresh(ctx, "")
	}
	if d := c.current(); d != nil {
		return d.GetAll(ctx)
	}
	return map[string]*x509.Certificate{}
}

// GetNewestSerial returns the newest certificate's serial ("" when none
// could be downloaded), downloading certificates on first use.
func (c *payCertStore) GetNewestSerial(ctx context.Context) string {
	if c.current() == nil {
		c.refresh(ctx, "")
	}
	if d := c.current(); d != nil {
		return d.GetNewestSerial(ctx)
	}
	return ""
}

// refresh downloads the certificates unless another caller just did, or
// serial became known meanwhile, or the last attempt is too recent.
func (c *payCertStore) refresh(ctx context.Context, serial string) {
	c.dl.Lock()
	defer c.dl.Unlock()
	d := c.current()
	if d != nil {
		if serial == "" {
			return
		}
		if _, ok := d.Get(ctx, serial); ok {
			return
		}
	}
	wait := PayCertRefreshInterval
	if d == nil {
		wait = PayCertRetryInterval
	}
	start := time.Now()
	if !c.lastAttempt.IsZero() && start.Sub(c.lastAttempt) < wait {
		return
	}
	c.lastAttempt = start

	const api = "download_certificates"
	var err error
	if d == nil {
		d, err = downloader.NewCertificateDownloaderWithClient(ctx, c.client, c.apiV3Key)
		if err == nil {
			c.mu.Lock()
			c.d = d
			c.mu.Unlock()
		}
	} else {
		err = d.DownloadCertificates(ctx)
	}
	if err != nil {
		err = payError(api, err)
		c.log.Warn("wechat: pay: platform certificates not downloaded", "err", err)
	}
	adapters.Observe(PayPlatform, api, start, err)
}
