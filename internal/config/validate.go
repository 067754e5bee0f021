package config

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

var appIDPattern = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// Validate checks the configuration and loads key files. It returns the first
// problem as an *Error.
func (c *Config) Validate() error {
	if c.DatabaseURL == "" {
		return &Error{Key: "database_url", Msg: "required (or set DATABASE_URL)"}
	}
	if len(c.SecretKey) < minSecretKeyBytes {
		return &Error{Key: "secret_key", Msg: fmt.Sprintf("must be at least %d bytes, got %d", minSecretKeyBytes, len(c.SecretKey))}
	}
	if c.PublicURL != "" {
		if err := checkURL(c.PublicURL); err != nil {
			return &Error{Key: "public_url", Msg: err.Error()}
		}
		c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	}
	names := map[string]bool{}
	for i, k := range c.APIKeys {
		key := fmt.Sprintf("api_keys[%d]", i)
		switch {
		case k.Name == "":
			return &Error{Key: key + ".name", Msg: "required"}
		case names[k.Name]:
			return &Error{Key: key + ".name", Msg: fmt.Sprintf("duplicate name %q", k.Name)}
		case len(k.Key) < minAPIKeyBytes && !c.Sandbox: // sandbox mode's key is "sandbox"
			return &Error{Key: key + ".key", Msg: fmt.Sprintf("must be at least %d bytes", minAPIKeyBytes)}
		}
		names[k.Name] = true
	}
	if c.Events.URL != "" {
		if err := checkURL(c.Events.URL); err != nil {
			return &Error{Key: "events.url", Msg: err.Error()}
		}
		if c.Events.Secret == "" {
			return &Error{Key: "events.secret", Msg: "required when events.url is set"}
		}
	}
	// Keys are checked in the file's order (a slice, not a map), so the
	// same file reports the same error on every run.
	for _, e := range []struct{ key, v string }{
		{"endpoints.wechat_api", c.Endpoints.WeChatAPI}, {"endpoints.wechatpay_api", c.Endpoints.WeChatPayAPI},
		{"endpoints.qq_api", c.Endpoints.QQAPI}, {"endpoints.qpay_api", c.Endpoints.QPayAPI},
		{"endpoints.alipay_gateway", c.Endpoints.AlipayGateway},
	} {
		if err := checkURL(e.v); err != nil {
			return &Error{Key: e.key, Msg: err.Error()}
		}
	}
	if _, err := time.Parse("15:04", c.Reconcile.At); err != nil {
		return &Error{Key: "reconcile.at", Msg: `must be "HH:MM"`}
	}
	if c.Limits.BodyBytes < 1024 {
		return &Error{Key: "limits.body_bytes", Msg: "must be at least 1024"}
	}
	if err := c.validateJobs(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, a := range c.Apps {
		if a == nil {
			return &Error{Key: fmt.Sprintf("apps[%d]", i), Msg: "empty entry"}
		}
		if !appIDPattern.MatchString(a.ID) {
			return &Error{App: a.ID, Key: "id", Msg: "must match [a-z0-9-]{1,32}"}
		}
		if seen[a.ID] {
			return &Error{App: a.ID, Key: "id", Msg: "duplicate app id"}
		}
		seen[a.ID] = true
		if err := a.validate(c); err != nil {
			return &Error{App: a.ID, Key: err.key, Msg: err.msg}
		}
	}
	return nil
}

// validateJobs checks the jobs and retention sections.
func (c *Config) validateJobs() *Error {
	switch {
	case c.Jobs.Timeout < time.Second:
		return &Error{Key: "jobs.timeout", Msg: "must be at least 1s"}
	case c.Jobs.RescueAfter < c.Jobs.Timeout:
		return &Error{Key: "jobs.rescue_after", Msg: fmt.Sprintf("must be at least jobs.timeout (%v)", c.Jobs.Timeout)}
	case c.Retention.Callbacks < MinKeepCallbacks:
		return &Error{Key: "retention.callbacks", Msg: fmt.Sprintf("must be at least %v: platforms retry callbacks for about a day", MinKeepCallbacks)}
	}
	for _, r := range []struct {
		key      string
		v, least time.Duration
		shown    string
	}{
		{"retention.events", c.Retention.Events, minKeep, minKeep.String()},
		{"retention.sessions", c.Retention.Sessions, minKeep, minKeep.String()},
		{"retention.completed_jobs", c.Retention.CompletedJobs, time.Minute, "1m"},
		{"retention.discarded_jobs", c.Retention.DiscardedJobs, time.Minute, "1m"},
	} {
		if r.v < r.least {
			return &Error{Key: r.key, Msg: "must be at least " + r.shown}
		}
	}
	return nil
}

type keyErr struct{ key, msg string }

func kerr(key, format string, args ...any) *keyErr {
	return &keyErr{key: key, msg: fmt.Sprintf(format, args...)}
}

func (a *App) validate(c *Config) *keyErr {
	if a.AppID == "" {
		return kerr("app_id", "required")
	}
	switch a.Platform {
	case WeChat, QQ:
		if a.AppSecret == "" {
			return kerr("app_secret", "required for platform %s", a.Platform)
		}
		if err := a.validateWeChatMessages(); err != nil {
			return err
		}
	case Alipay:
		if a.PrivateKey == nil {
			if a.PrivateKeyFile == "" {
				return kerr("private_key_file", "required for platform alipay")
			}
			k, err := loadPrivateKey(a.PrivateKeyFile)
			if err != nil {
				return kerr("private_key_file", "%v", err)
			}
			a.PrivateKey = k
		}
		if err := a.validateAlipayTrust(); err != nil {
			return err
		}
		if a.Messages.Token != "" || a.Messages.EncodingAESKey != "" {
			return kerr("messages", "alipay apps take messages.aes_key only")
		}
		if a.Messages.AESKey != "" {
			if k, err := base64.StdEncoding.DecodeString(a.Messages.AESKey); err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
				return kerr("messages.aes_key", "must be base64 of a 16, 24 or 32-byte key")
			}
		}
	case "":
		return kerr("platform", "required (wechat, qq or alipay)")
	default:
		return kerr("platform", "unknown platform %q (want wechat, qq or alipay)", a.Platform)
	}
	if a.VirtualPayment != nil {
		if err := a.validateVirtualPayment(); err != nil {
			return err
		}
	}
	if a.Pay != nil {
		if c.PublicURL == "" && !c.Sandbox {
			return kerr("pay", "public_url is required to build notify URLs")
		}
		if err := a.Pay.validate(a.Platform); err != nil {
			return err
		}
	}
	return nil
}

func (a *App) validateWeChatMessages() *keyErr {
	m := a.Messages
	if m.AESKey != "" {
		return kerr("messages.aes_key", "only for alipay apps; use encoding_aes_key")
	}
	if m.EncodingAESKey != "" {
		if m.Token == "" {
			return kerr("messages.token", "required when encoding_aes_key is set")
		}
		if _, err := DecodeEncodingAESKey(m.EncodingAESKey); err != nil {
			return kerr("messages.encoding_aes_key", "%v", err)
		}
	}
	return nil
}

// maxCoinPrice bounds virtual_payment.coin_price (fen per coin): 1,000 yuan.
const maxCoinPrice = 100_000

// validateVirtualPayment checks the virtual_payment section of a WeChat app
// and fills in the default env.
func (a *App) validateVirtualPayment() *keyErr {
	v := a.VirtualPayment
	if a.Platform != WeChat {
		return kerr("virtual_payment", "only wechat apps have virtual payment")
	}
	if v.Env == "" {
		v.Env = VirtualPaymentProduction
	}
	switch {
	case v.Env != VirtualPaymentProduction && v.Env != VirtualPaymentSandbox:
		return kerr("virtual_payment.env", "must be production or sandbox, got %q", v.Env)
	case v.OfferID == "":
		return kerr("virtual_payment.offer_id", "required")
	case !printable(v.OfferID):
		return kerr("virtual_payment.offer_id", "must be printable ASCII without spaces")
	case v.Env == VirtualPaymentProduction && v.AppKey == "":
		return kerr("virtual_payment.app_key", "required with env production")
	case v.Env == VirtualPaymentSandbox && v.SandboxAppKey == "":
		return kerr("virtual_payment.sandbox_app_key", "required with env sandbox")
	case v.AppKey != "" && !printable(v.AppKey):
		return kerr("virtual_payment.app_key", "must be printable ASCII without spaces")
	case v.SandboxAppKey != "" && !printable(v.SandboxAppKey):
		return kerr("virtual_payment.sandbox_app_key", "must be printable ASCII without spaces")
	case v.CoinPrice < 0 || v.CoinPrice > maxCoinPrice:
		return kerr("virtual_payment.coin_price", "must be from 0 to %d fen per coin", maxCoinPrice)
	case a.Messages.Token == "":
		// Deliveries, coin payments and refunds arrive as message pushes.
		return kerr("messages.token", "required with virtual_payment: its notifications arrive as message pushes")
	}
	return nil
}

// printable reports whether s is non-empty printable ASCII without spaces.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return s != ""
}

// DecodeEncodingAESKey turns a 43-character EncodingAESKey into its 32-byte key.
func DecodeEncodingAESKey(s string) ([]byte, error) {
	if len(s) != 43 {
		return nil, fmt.Errorf("must be 43 characters, got %d", len(s))
	}
	k, err := base64.StdEncoding.DecodeString(s + "=")
	if err != nil || len(k) != 32 {
		return nil, errors.New("not valid base64 for a 32-byte key")
	}
	return k, nil
}

func (p *Pay) validate(platform Platform) *keyErr {
	if p.MchID == "" {
		if platform == Alipay {
			return nil // Alipay pays with the app's keys; mch_id is optional.
		}
		return kerr("pay.mch_id", "required")
	}
	switch platform {
	case WeChat:
		if p.SerialNo == "" {
			return kerr("pay.serial_no", "required")
		}
		if len(p.APIv3Key) != 32 {
			return kerr("pay.api_v3_key", "must be 32 bytes, got %d", len(p.APIv3Key))
		}
		if p.PrivateKey == nil {
			if p.PrivateKeyFile == "" {
				return kerr("pay.private_key_file", "required")
			}
			k, err := loadPrivateKey(p.PrivateKeyFile)
			if err != nil {
				return kerr("pay.private_key_file", "%v", err)
			}
			p.PrivateKey = k
		}
		if (p.PublicKeyID == "") != (p.PublicKeyFile == "" && p.PublicKey == nil) {
			if p.PublicKeyID == "" {
				return kerr("pay.public_key_id", "required with public_key_file")
			}
			return kerr("pay.public_key_file", "required with public_key_id")
		}
		if p.PublicKeyID != "" && !strings.HasPrefix(p.PublicKeyID, "PUB_KEY_ID_") {
			return kerr("pay.public_key_id", "must start with PUB_KEY_ID_")
		}
		if p.PublicKey == nil && p.PublicKeyFile != "" {
			k, err := loadPublicKey(p.PublicKeyFile)
			if err != nil {
				return kerr("pay.public_key_file", "%v", err)
			}
			p.PublicKey = k
		}
	case QQ:
		if p.APIKey == "" {
			return kerr("pay.api_key", "required for QQ wallet")
		}
		if (p.CertFile == "") != (p.KeyFile == "") {
			return kerr("pay.cert_file", "cert_file and key_file go together")
		}
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an absolute http(s) URL, got %q", s)
	}
	return nil
}

func readPEM(path string) (*pem.Block, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(raw); block != nil {
		return block, nil
	}
	// Alipay hands out keys as bare base64 DER; accept that too.
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(raw)), ""))
	if err != nil || len(der) == 0 {
		return nil, fmt.Errorf("%s: neither PEM nor base64 DER", path)
	}
	return &pem.Block{Bytes: der}, nil
}

func loadPrivateKey(path string) (*rsa.PrivateKey, error) {
	block, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	return ParsePrivateKey(block.Bytes)
}

// ParsePrivateKey parses a DER RSA private key in PKCS#8 or PKCS#1 form.
func ParsePrivateKey(der []byte) (*rsa.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("not an RSA private key")
		}
		return rk, nil
	}
	k, err := x509.ParsePKCS1PrivateKey(der)
	if err != nil {
		return nil, errors.New("not a PKCS#8 or PKCS#1 RSA private key")
	}
	return k, nil
}

func loadPublicKey(path string) (*rsa.PublicKey, error) {
	block, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	return ParsePublicKey(block)
}

// ParsePublicKey parses a PEM block holding an RSA public key (PKIX or
// PKCS#1) or a certificate carrying one.
func ParsePublicKey(block *pem.Block) (*rsa.PublicKey, error) {
	if block.Type == "CERTIFICATE" {
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		k, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("certificate does not hold an RSA key")
		}
		return k, nil
	}
	if k, err := x509.ParsePKIXPublicKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("not an RSA public key")
		}
		return rk, nil
	}
	k, err := x509.ParsePKCS1PublicKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not an RSA public key")
	}
	return k, nil
}
