package sandbox

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/minigate/minigate/internal/config"
)

// ConfigFile describes a minigate config file that points at a standalone
// simulator (`minigate sandbox --write-config DIR`).
type ConfigFile struct {
	Listen      string
	DatabaseURL string
	PublicURL   string
	APIKey      string
	SandboxURL  string // the simulator's base, ending in /sandbox
	Apps        []*config.App
}

// WriteConfig writes minigate.yaml and the apps' key files into dir and
// returns the config file's path. The file uses the contract's format, so
// `minigate serve --config` reads it like any other.
func WriteConfig(dir string, f ConfigFile) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("sandbox: write config: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	doc := map[string]any{
		"listen":       f.Listen,
		"database_url": f.DatabaseURL,
		"public_url":   f.PublicURL,
		"secret_key":   hex.EncodeToString(secret),
		"api_keys":     []map[string]string{{"name": "sandbox", "key": f.APIKey}},
		"endpoints":    endpointsDoc(Endpoints(f.SandboxURL)),
	}
	var apps []map[string]any
	for _, a := range f.Apps {
		m := map[string]any{"id": a.ID, "platform": string(a.Platform), "app_id": a.AppID}
		if a.UnionScope != "" {
			m["union_scope"] = a.UnionScope
		}
		switch a.Platform {
		case config.WeChat, config.QQ:
			m["app_secret"] = a.AppSecret
			msgs := map[string]string{"token": a.Messages.Token}
			if a.Messages.EncodingAESKey != "" {
				msgs["encoding_aes_key"] = a.Messages.EncodingAESKey
			}
			m["messages"] = msgs
		case config.Alipay:
			priv, err := writeKey(dir, a.ID+"_app_private_key.pem", a.PrivateKey)
			if err != nil {
				return "", err
			}
			m["private_key_file"] = priv
			if a.AlipayCertMode() {
				files := map[string][]*x509.Certificate{
					"app_cert_file": {a.AppCert}, "alipay_cert_file": a.AlipayCerts, "alipay_root_cert_file": a.AlipayRootCerts,
				}
				for key, certs := range files {
					if m[key], err = writeCerts(dir, a.ID+"_"+key+".crt", certs); err != nil {
						return "", err
					}
				}
				break
			}
			pub, err := writePublicKey(dir, a.ID+"_alipay_public_key.pem", a.AlipayPublicKey)
			if err != nil {
				return "", err
			}
			m["alipay_public_key_file"] = pub
		}
		if p := a.Pay; p != nil {
			pay := map[string]string{}
			set := func(k, v string) {
				if v != "" {
					pay[k] = v
				}
			}
			set("mch_id", p.MchID)
			set("serial_no", p.SerialNo)
			set("api_v3_key", p.APIv3Key)
			set("public_key_id", p.PublicKeyID)
			set("api_key", p.APIKey)
			set("seller_id", p.SellerID)
			if p.PrivateKey != nil {
				path, err := writeKey(dir, a.ID+"_apiclient_key.pem", p.PrivateKey)
				if err != nil {
					return "", err
				}
				pay["private_key_file"] = path
			}
			if p.PublicKey != nil {
				path, err := writePublicKey(dir, a.ID+"_wechatpay_pub_key.pem", p.PublicKey)
				if err != nil {
					return "", err
				}
				pay["public_key_file"] = path
			}
			m["pay"] = pay
		}
		if v := a.VirtualPayment; v != nil {
			m["virtual_payment"] = map[string]any{
				"offer_id": v.OfferID, "app_key": v.AppKey, "sandbox_app_key": v.SandboxAppKey,
				"env": v.Env, "coin_price": v.CoinPrice,
			}
		}
		apps = append(apps, m)
	}
	doc["apps"] = apps
	raw, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "minigate.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return "", fmt.Errorf("sandbox: write config: %w", err)
	}
	return path, nil
}

func endpointsDoc(e config.Endpoints) map[string]string {
	return map[string]string{
		"wechat_api": e.WeChatAPI, "wechatpay_api": e.WeChatPayAPI, "qq_api": e.QQAPI,
		"qpay_api": e.QPayAPI, "alipay_gateway": e.AlipayGateway,
	}
}

func writeKey(dir, name string, k *rsa.PrivateKey) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", err
	}
	return writePEM(dir, name, "PRIVATE KEY", der)
}

func writePublicKey(dir, name string, k *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "", err
	}
	return writePEM(dir, name, "PUBLIC KEY", der)
}

func writeCerts(dir, name string, certs []*x509.Certificate) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, alipayPEM(certs...), 0o600); err != nil {
		return "", fmt.Errorf("sandbox: write certificates: %w", err)
	}
	return path, nil
}

func writePEM(dir, name, typ string, der []byte) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return "", fmt.Errorf("sandbox: write key: %w", err)
	}
	return path, nil
}
