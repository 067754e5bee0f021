// Package seal encrypts small secrets at rest — session keys, platform
// access tokens — with AES-256-GCM under keys derived from the configured
// secret_key with HKDF-SHA256 (no salt), one key per purpose: the raw
// secret is never used as a key, and a value sealed for one purpose does
// not open for another.
//
// A sealed value is
//
//	version (1 byte, Version) ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag (16 bytes)
//
// authenticated together with associated data that names what the value
// belongs to (an identity, an app), so a sealed value copied to another row
// does not open.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Version is the format version byte sealed values start with.
const Version byte = 1

// ErrOpen reports a sealed value that does not open: another secret_key,
// another purpose or associated data, an unknown version or tampering.
var ErrOpen = errors.New("seal: sealed value does not open")

// Sealer seals and opens values for one purpose.
type Sealer struct {
	aead cipher.AEAD
}

// New returns the Sealer for purpose (the HKDF info, e.g.
// "minigate session_key v1") under secret.
func New(secret, purpose string) (*Sealer, error) {
	if secret == "" {
		return nil, errors.New("seal: secret key is empty")
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("seal: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: gcm: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext bound to ad.
func (s *Sealer) Seal(plaintext, ad []byte) []byte {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+s.aead.Overhead())
	out[0] = Version
	if _, err := rand.Read(out[1:]); err != nil {
		panic("seal: crypto/rand: " + err.Error()) // crypto/rand never fails on supported platforms
	}
	return s.aead.Seal(out, out[1:1+ns], plaintext, ad)
}

// Open decrypts a value made by Seal with the same purpose, secret and ad;
// anything else is ErrOpen.
func (s *Sealer) Open(sealed, ad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() || sealed[0] != Version {
		return nil, ErrOpen
	}
	pt, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
