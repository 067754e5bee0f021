package sessions

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/minigate/minigate/internal/seal"
)

// Session keys are sealed at rest with internal/seal (AES-256-GCM under a
// key derived from secret_key with HKDF-SHA256, info sealInfo), bound to
// the identity they belong to (app and openid as associated data), so a
// sealed key copied to another identity's row does not open.
const (
	sealVersion = seal.Version
	sealInfo    = "minigate session_key v1"
)

// ErrSealedKey reports a sealed session key that does not open: a changed
// secret_key, an unknown format version or tampering.
var ErrSealedKey = errors.New("sessions: sealed session key does not open")

// sealer seals and opens session keys.
type sealer struct {
	s *seal.Sealer
}

func newSealer(secret string) (*sealer, error) {
	s, err := seal.New(secret, sealInfo)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	return &sealer{s: s}, nil
}

func sealAD(app, openID string) []byte {
	return []byte(app + "\x00" + openID)
}

// seal encrypts plaintext for the identity (app, openID).
func (s *sealer) seal(plaintext, app, openID string) []byte {
	return s.s.Seal([]byte(plaintext), sealAD(app, openID))
}

// open decrypts a value made by seal for the same identity.
func (s *sealer) open(sealed []byte, app, openID string) (string, error) {
	pt, err := s.s.Open(sealed, sealAD(app, openID))
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
