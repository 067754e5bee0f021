package sessions

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
)

func TestSealer(t *testing.T) {
	t.Parallel()
	s, err := newSealer("test-secret-key-0123456789abcdef0123456789")
	if err != nil {
		t.Fatal(err)
	}
	other, err := newSealer("another-secret-key-0123456789abcdef012345")
	if err != nil {
		t.Fatal(err)
	}
	const key = "tiihtNczf5v6AKRyjwEUhQ=="
	sealed := s.seal(key, "wx", "openid-1")

	t.Run("round trip", func(t *testing.T) {
		got, err := s.open(sealed, "wx", "openid-1")
		if err != nil || got != key {
			t.Fatalf("open = %q, %v", got, err)
		}
	})
	t.Run("versioned and never plaintext", func(t *testing.T) {
		if sealed[0] != sealVersion {
			t.Fatalf("version byte = %d", sealed[0])
		}
		if bytes.Contains(sealed, []byte(key)) {
			t.Fatal("sealed value contains the plaintext")
		}
		if again := s.seal(key, "wx", "openid-1"); bytes.Equal(again, sealed) {
			t.Fatal("two seals of one value are equal: nonce is not random")
		}
	})
	tamper := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 1
		return c
	}
	for _, tc := range []struct {
		name   string
		sl     *sealer
		sealed []byte
		app    string
		openID string
	}{
		{"other identity", s, sealed, "wx", "openid-2"},
		{"other app", s, sealed, "qq", "openid-1"},
		{"other secret", other, sealed, "wx", "openid-1"},
		{"tampered ciphertext", s, tamper(sealed, len(sealed)-1), "wx", "openid-1"},
		{"unknown version", s, tamper(sealed, 0), "wx", "openid-1"},
		{"truncated", s, sealed[:10], "wx", "openid-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.sl.open(tc.sealed, tc.app, tc.openID); !errors.Is(err, ErrSealedKey) {
				t.Fatalf("open = %v, want ErrSealedKey", err)
			}
		})
	}
}

// TestSealerOpensKeysSealedBefore: session keys sealed before sealing moved
// to internal/seal (this value was made by that code) still open.
func TestSealerOpensKeysSealedBefore(t *testing.T) {
	t.Parallel()
	s, err := newSealer("test-secret-key-0123456789abcdef0123456789")
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := hex.DecodeString("011b18ff743cf487c40dcd811489560e1f99c9cf0d4aced35cf7ccecae725e2f6e567d46fff139037a9071523de26135fc5dfe5376")
	if got, err := s.open(sealed, "wx", "openid-1"); err != nil || got != "tiihtNczf5v6AKRyjwEUhQ==" {
		t.Fatalf("open = %q, %v", got, err)
	}
}

// encryptUserData encrypts as the WeChat client does: AES-128-CBC, PKCS#7.
func encryptUserData(t testing.TB, sessionKey string, iv, plaintext []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	n := aes.BlockSize - len(plaintext)%aes.BlockSize
	padded := append(bytes.Clone(plaintext), bytes.Repeat([]byte{byte(n)}, n)...)
	out := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, padded)
	return base64.StdEncoding.EncodeToString(out)
}

func TestDecryptUserData(t *testing.T) {
	t.Parallel()
	const (
		key   = "tiihtNczf5v6AKRyjwEUhQ=="
		appID = "wx4f4bc4dec97d474b"
	)
	iv := []byte("0123456789abcdef")
	ivB64 := base64.StdEncoding.EncodeToString(iv)
	good := `{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}`
	badPadding := func() string {
		// A last block whose padding byte is 0 after decryption.
		k, _ := base64.StdEncoding.DecodeString(key)
		block, _ := aes.NewCipher(k)
		pt := append([]byte(`{"a":1}`), make([]byte, 9)...)
		out := make([]byte, 16)
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, pt)
		return base64.StdEncoding.EncodeToString(out)
	}()
	for _, tc := range []struct {
		name    string
		key     string
		data    string
		iv      string
		wantErr error
	}{
		{"valid", key, encryptUserData(t, key, iv, []byte(good)), ivB64, nil},
		{"foreign watermark", key, encryptUserData(t, key, iv, []byte(`{"watermark":{"appid":"wx0000000000000000"}}`)), ivB64, errWatermark},
		{"no watermark", key, encryptUserData(t, key, iv, []byte(`{"openId":"x"}`)), ivB64, errWatermark},
		{"not an object", key, encryptUserData(t, key, iv, []byte(`["watermark"]`)), ivB64, errNotJSONObject},
		{"other session key", "AAAAAAAAAAAAAAAAAAAAAA==", encryptUserData(t, key, iv, []byte(good)), ivB64, errDecrypt},
		{"bad padding", key, badPadding, ivB64, errDecrypt},
		{"iv not base64", key, encryptUserData(t, key, iv, []byte(good)), "%%%", errBadEncoding},
		{"short iv", key, encryptUserData(t, key, iv, []byte(good)), base64.StdEncoding.EncodeToString(iv[:8]), errBadEncoding},
		{"data not whole blocks", key, base64.StdEncoding.EncodeToString([]byte("short")), ivB64, errBadEncoding},
		{"malformed stored key", "bm90IGEga2V5", encryptUserData(t, key, iv, []byte(good)), ivB64, errDecrypt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := decryptUserData(tc.key, tc.data, tc.iv, appID)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(out) != good {
				t.Fatalf("decrypt = %s, %v", out, err)
			}
		})
	}
}

// FuzzDecryptUserData: the user-data decryptor never panics, refuses with
// one of its errors, and accepts only what opens with the session key to a
// JSON object whose watermark names our app. The fuzzer gets both the raw
// fields and a plaintext that is encrypted properly, so the JSON and
// watermark checks are reached.
func FuzzDecryptUserData(f *testing.F) {
	const (
		key   = "tiihtNczf5v6AKRyjwEUhQ=="
		appID = "wx4f4bc4dec97d474b"
	)
	iv := []byte("0123456789abcdef")
	for _, pt := range []string{
		`{"openId":"o1","watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}`,
		`{"watermark":{"appid":"wx0000000000000000"}}`,
		`{"watermark":"wx4f4bc4dec97d474b"}`,
		`{"watermark":{"appid":"wx4f4bc4dec97d474b"}} trailing`,
		`["watermark"]`,
		"\x00\x01",
	} {
		f.Add(encryptUserData(f, key, iv, []byte(pt)), base64.StdEncoding.EncodeToString(iv), []byte(pt))
	}
	f.Add("%%%", "AAAA", []byte(""))
	known := []error{errBadEncoding, errDecrypt, errNotJSONObject, errWatermark}
	check := func(t *testing.T, out json.RawMessage, err error) {
		if err != nil {
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("unexpected error %v", err)
		}
		var probe struct {
			Watermark struct {
				AppID string `json:"appid"`
			} `json:"watermark"`
		}
		if json.Unmarshal(out, &probe) != nil || probe.Watermark.AppID != appID {
			t.Fatalf("accepted %q: not an object with our watermark", out)
		}
	}
	f.Fuzz(func(t *testing.T, data, ivText string, plaintext []byte) {
		out, err := decryptUserData(key, data, ivText, appID)
		check(t, out, err)
		out, err = decryptUserData(key, encryptUserData(t, key, iv, plaintext), base64.StdEncoding.EncodeToString(iv), appID)
		check(t, out, err)
	})
}
