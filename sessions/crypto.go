package sessions

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Session keys are sealed at rest with AES-256-GCM. The key is derived from
// the configured secret_key with HKDF-SHA256 (no salt, info sealInfo), so
// the raw secret is never used directly and other uses of it get other keys.
// A sealed value is
//
//	version (1 byte, sealVersion) ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag (16 bytes)
//
// and is authenticated together with the identity it belongs to (app and
// openid as associated data), so a sealed key copied to another identity's
// row does not open.
const (
	sealVersion byte = 1
	sealInfo         = "minigate session_key v1"
)

// ErrSealedKey reports a sealed session key that does not open: a changed
// secret_key, an unknown format version or tampering.
var ErrSealedKey = errors.New("sessions: sealed session key does not open")

// sealer seals and opens session keys.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(secret string) (*sealer, error) {
	if secret == "" {
		return nil, errors.New("sessions: secret key is empty")
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, sealInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("sessions: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sessions: cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("sessions: gcm: %w", err)
	}
	return &sealer{aead: aead}, nil
}

func sealAD(app, openID string) []byte {
	return []byte(app + "\x00" + openID)
}

// seal encrypts plaintext for the identity (app, openID).
func (s *sealer) seal(plaintext, app, openID string) []byte {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		panic("sessions: crypto/rand: " + err.Error()) // crypto/rand never fails on supported platforms
	}
	return s.aead.Seal(out, out[1:1+ns], []byte(plaintext), sealAD(app, openID))
}

// open decrypts a value made by seal for the same identity.
func (s *sealer) open(sealed []byte, app, openID string) (string, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() || sealed[0] != sealVersion {
		return "", ErrSealedKey
	}
	pt, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], sealAD(app, openID))
	if err != nil {
		return "", ErrSealedKey
	}
	return string(pt), nil
}

// Errors from decryptUserData; the service maps them to API errors.
var (
	errBadEncoding   = errors.New("sessions: encrypted_data or iv is not valid base64 of the right length")
	errDecrypt       = errors.New("sessions: user data does not decrypt with the stored session key")
	errNotJSONObject = errors.New("sessions: decrypted user data is not a JSON object")
	errWatermark     = errors.New("sessions: watermark appid does not match the app")
)

// decryptUserData opens WeChat/QQ encrypted user data (wx.getUserInfo,
// getPhoneNumber's legacy encryptedData, share info…): AES-128-CBC with
// key = base64(sessionKey) and the given base64 iv, PKCS#7 padding, JSON
// inside whose watermark.appid must equal appID.
func decryptUserData(sessionKey, encryptedData, iv, appID string) (json.RawMessage, error) {
	key, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil || len(key) != 16 {
		return nil, fmt.Errorf("%w: stored session key is malformed", errDecrypt)
	}
	ivb, err := base64.StdEncoding.DecodeString(iv)
	if err != nil || len(ivb) != aes.BlockSize {
		return nil, errBadEncoding
	}
	ct, err := base64.StdEncoding.DecodeString(encryptedData)
	if err != nil || len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errBadEncoding
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sessions: cipher: %w", err)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, ivb).CryptBlocks(pt, ct)
	pt, ok := pkcs7Unpad(pt, aes.BlockSize)
	if !ok {
		return nil, errDecrypt
	}
	var probe struct {
		Watermark *struct {
			AppID string `json:"appid"`
		} `json:"watermark"`
	}
	trimmed := bytes.TrimSpace(pt)
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &probe) != nil {
		return nil, errNotJSONObject
	}
	if probe.Watermark == nil || probe.Watermark.AppID != appID {
		return nil, errWatermark
	}
	return json.RawMessage(trimmed), nil
}

// pkcs7Unpad strips PKCS#7 padding, reporting whether it was well formed.
func pkcs7Unpad(b []byte, blockSize int) ([]byte, bool) {
	if len(b) == 0 || len(b)%blockSize != 0 {
		return nil, false
	}
	n := int(b[len(b)-1])
	if n == 0 || n > blockSize {
		return nil, false
	}
	for _, c := range b[len(b)-n:] {
		if int(c) != n {
			return nil, false
		}
	}
	return b[:len(b)-n], true
}
