package sandbox

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/minigate/minigate/internal/config"
)

// WeChat Pay key modes for generated merchants.
const (
	KeyModePublicKey   = "public_key"  // WeChat Pay public key only (new merchants)
	KeyModeCertificate = "certificate" // platform certificates only
	KeyModeBoth        = "both"        // migrating: both configured
)

// AppSpec describes an app to generate with NewAppPair.
type AppSpec struct {
	ID         string
	Platform   string
	UnionScope string
	// PublicURL is minigate's public base URL (for callbacks).
	PublicURL string
	// MessageMode ("plaintext", "compatible", "safe"; default "safe") and
	// MessageFormat ("xml", "json"; default "xml") for WeChat/QQ pushes.
	MessageMode   string
	MessageFormat string
	// Pay adds a merchant account.
	Pay bool
	// WeChatPayKeyMode is one of the KeyMode constants (default public key).
	WeChatPayKeyMode string
	// AlipayCertMode sets an Alipay app up in public-key certificate mode
	// (default: public-key mode).
	AlipayCertMode bool
	// VirtualPayment adds WeChat virtual payment (WeChat apps), in
	// VirtualPaymentEnv ("production", the default, or "sandbox").
	VirtualPayment    bool
	VirtualPaymentEnv string
	// Key supplies RSA keys; nil generates fresh 2048-bit keys.
	Key func() (*rsa.PrivateKey, error)
}

// DemoCoinPrice is the price of one coin in generated apps with virtual
// payment: 10 fen (10 coins a yuan).
const DemoCoinPrice = 10

// NewAppPair generates matching credentials for one app: the simulator's
// view (platform private keys, merchant public keys) and minigate's config
// (the opposite halves). Ids are derived from spec.ID, so they are stable.
func NewAppPair(spec AppSpec) (*App, *config.App, error) {
	if spec.Key == nil {
		spec.Key = func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }
	}
	if spec.MessageMode == "" {
		spec.MessageMode = "safe"
	}
	if spec.MessageFormat == "" {
		spec.MessageFormat = "xml"
	}
	sb := &App{
		ID: spec.ID, Platform: spec.Platform, UnionScope: spec.UnionScope,
		AppSecret:   randomHex(16),
		OriginalID:  "gh_" + stableHex(spec.ID, "gh", 6),
		CallbackURL: strings.TrimRight(spec.PublicURL, "/") + "/callbacks/" + spec.ID,
	}
	cfg := &config.App{ID: spec.ID, Platform: config.Platform(spec.Platform), UnionScope: spec.UnionScope}
	switch spec.Platform {
	case WeChat, QQ:
		if spec.Platform == WeChat {
			sb.AppID = "wx" + stableHex(spec.ID, "appid", 8)
		} else {
			sb.AppID = fmt.Sprintf("11%08d", stableNum(spec.ID, "appid")%1e8)
		}
		sb.Messages = MessageSettings{
			Token: randomHex(12), EncodingAESKey: randomAESKey(),
			Mode: spec.MessageMode, Format: spec.MessageFormat,
		}
		cfg.AppID, cfg.AppSecret = sb.AppID, sb.AppSecret
		cfg.Messages = config.Messages{Token: sb.Messages.Token, EncodingAESKey: sb.Messages.EncodingAESKey}
		if spec.MessageMode == "plaintext" {
			cfg.Messages.EncodingAESKey = ""
			sb.Messages.EncodingAESKey = ""
		}
	case Alipay:
		sb.AppID = fmt.Sprintf("2021%012d", stableNum(spec.ID, "appid")%1e12)
		appKey, err := spec.Key()
		if err != nil {
			return nil, nil, err
		}
		alipayKey, err := spec.Key()
		if err != nil {
			return nil, nil, err
		}
		sb.Alipay = &AlipayAccount{
			AppPublicKey: &appKey.PublicKey, AlipayKey: alipayKey,
			SellerID: fmt.Sprintf("2088%012d", stableNum(spec.ID, "seller")%1e12),
		}
		cfg.AppID, cfg.PrivateKey, cfg.AlipayPublicKey = sb.AppID, appKey, &alipayKey.PublicKey
		if spec.AlipayCertMode {
			if err := newAlipayCertPair(spec, sb, cfg, appKey, alipayKey); err != nil {
				return nil, nil, err
			}
		}
		if spec.Pay {
			cfg.Pay = &config.Pay{SellerID: sb.Alipay.SellerID}
		}
	default:
		return nil, nil, fmt.Errorf("sandbox: unknown platform %q", spec.Platform)
	}
	if spec.Pay && spec.Platform == WeChat {
		if err := newWeChatPayPair(spec, sb, cfg); err != nil {
			return nil, nil, err
		}
	}
	if spec.VirtualPayment && spec.Platform == WeChat {
		x := &XPayAccount{
			OfferID: fmt.Sprintf("145%07d", stableNum(spec.ID, "offerid")%1e7),
			AppKey:  randomHex(16), SandboxAppKey: randomHex(16), CoinPrice: DemoCoinPrice,
		}
		sb.XPay = x
		cfg.VirtualPayment = &config.VirtualPayment{
			OfferID: x.OfferID, AppKey: x.AppKey, SandboxAppKey: x.SandboxAppKey,
			Env: spec.VirtualPaymentEnv, CoinPrice: x.CoinPrice,
		}
	}
	if spec.Pay && spec.Platform == QQ {
		m := &QPayMerchant{MchID: fmt.Sprintf("1%09d", stableNum(spec.ID, "mch")%1e9), APIKey: randomHex(16)}
		sb.QPay = m
		cfg.Pay = &config.Pay{MchID: m.MchID, APIKey: m.APIKey}
	}
	return sb, cfg, nil
}

// newAlipayCertPair issues a certificate-mode app's certificates and
// gives minigate's config the three files' certificates instead of the
// Alipay public key.
func newAlipayCertPair(spec AppSpec, sb *App, cfg *config.App, appKey, alipayKey *rsa.PrivateKey) error {
	ca, err := alipayCertAuthority(spec.Key)
	if err != nil {
		return err
	}
	certs, appCert, err := newAlipayCerts(ca, sb.AppID, sb.Alipay.SellerID, appKey, alipayKey)
	if err != nil {
		return err
	}
	sb.Alipay.Certs = certs
	cfg.AlipayPublicKey, cfg.AppCert = nil, appCert
	if cfg.AlipayCerts, err = config.ParseCertificates(certs.AlipayCertPEM); err != nil {
		return err
	}
	cfg.AlipayRootCerts, err = config.ParseCertificates(certs.RootCertPEM)
	return err
}

func newWeChatPayPair(spec AppSpec, sb *App, cfg *config.App) error {
	merchantKey, err := spec.Key()
	if err != nil {
		return err
	}
	platformKey, err := spec.Key()
	if err != nil {
		return err
	}
	m := &WeChatPayMerchant{
		MchID:          fmt.Sprintf("19%08d", stableNum(spec.ID, "mch")%1e8),
		APIv3Key:       randomHex(16),
		MerchantSerial: strings.ToUpper(randomHex(20)),
		MerchantKey:    &merchantKey.PublicKey,
		PlatformKey:    platformKey,
	}
	pay := &config.Pay{MchID: m.MchID, SerialNo: m.MerchantSerial, APIv3Key: m.APIv3Key, PrivateKey: merchantKey}
	mode := spec.WeChatPayKeyMode
	if mode == "" {
		mode = KeyModePublicKey
	}
	if mode == KeyModeCertificate || mode == KeyModeBoth {
		cert, serial, err := selfSignedCert(platformKey)
		if err != nil {
			return err
		}
		m.PlatformCert, m.PlatformSerial = cert, serial
		m.SignWith = "certificate"
	}
	if mode == KeyModePublicKey || mode == KeyModeBoth {
		m.PublicKeyID = "PUB_KEY_ID_01" + strings.ToUpper(randomHex(14))
		pay.PublicKeyID, pay.PublicKey = m.PublicKeyID, &platformKey.PublicKey
		m.SignWith = "public_key"
	}
	sb.WeChatPay, cfg.Pay = m, pay
	return nil
}

// selfSignedCert makes a WeChat-Pay-platform-like certificate for key and
// returns it with its serial as uppercase hex.
func selfSignedCert(key *rsa.PrivateKey) (*x509.Certificate, string, error) {
	raw, _ := hex.DecodeString(randomHex(20))
	serial := new(big.Int).SetBytes(raw)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Tenpay.com Root CA (sandbox)", Organization: []string{"Tenpay.com"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", fmt.Errorf("sandbox: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", err
	}
	return cert, strings.ToUpper(hex.EncodeToString(cert.SerialNumber.Bytes())), nil
}

func stableHex(id, purpose string, n int) string {
	sum := sha256.Sum256([]byte(purpose + ":" + id))
	return hex.EncodeToString(sum[:n])
}

func stableNum(id, purpose string) uint64 {
	sum := sha256.Sum256([]byte(purpose + ":" + id))
	return binary.BigEndian.Uint64(sum[:8])
}

func randomAESKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("sandbox: crypto/rand: " + err.Error())
	}
	return strings.TrimRight(base64.StdEncoding.EncodeToString(b), "=")
}

// Endpoints returns the endpoints config that points minigate at a
// simulator mounted at base (e.g. "http://127.0.0.1:8080/sandbox").
func Endpoints(base string) config.Endpoints {
	base = strings.TrimRight(base, "/")
	return config.Endpoints{
		WeChatAPI:     base + "/wechat",
		WeChatPayAPI:  base + "/wechatpay",
		QQAPI:         base + "/qq",
		QPayAPI:       base + "/qpay",
		AlipayGateway: base + "/alipay/gateway.do",
	}
}

// DemoApps generates sandbox mode's apps: demo-wechat and demo-qq (one union
// scope, "demo") and demo-alipay, each with messages and payments;
// demo-wechat also has virtual payment.
func DemoApps(publicURL string) ([]*App, []*config.App, error) {
	var sbs []*App
	var cfgs []*config.App
	for _, spec := range []AppSpec{
		{ID: "demo-wechat", Platform: WeChat, UnionScope: "demo", PublicURL: publicURL, Pay: true, VirtualPayment: true},
		{ID: "demo-qq", Platform: QQ, UnionScope: "demo", PublicURL: publicURL, Pay: true},
		{ID: "demo-alipay", Platform: Alipay, PublicURL: publicURL, Pay: true},
	} {
		sb, cfg, err := NewAppPair(spec)
		if err != nil {
			return nil, nil, err
		}
		sbs, cfgs = append(sbs, sb), append(cfgs, cfg)
	}
	return sbs, cfgs, nil
}
