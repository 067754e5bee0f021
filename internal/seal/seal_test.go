package seal

import (
	"bytes"
	"errors"
	"testing"
)

const secret = "test-secret-key-0123456789abcdef0123456789"

func TestSealOpen(t *testing.T) {
	t.Parallel()
	s, err := New(secret, "purpose A")
	if err != nil {
		t.Fatal(err)
	}
	otherPurpose, _ := New(secret, "purpose B")
	otherSecret, _ := New("another-secret-key-0123456789abcdef012345", "purpose A")
	plaintext, ad := []byte("access-token-value"), []byte("app-1")
	sealed := s.Seal(plaintext, ad)

	if got, err := s.Open(sealed, ad); err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if sealed[0] != Version || bytes.Contains(sealed, plaintext) {
		t.Fatalf("sealed value %x: wrong version or contains the plaintext", sealed)
	}
	if again := s.Seal(plaintext, ad); bytes.Equal(again, sealed) {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	tamper := func(i int) []byte {
		c := bytes.Clone(sealed)
		c[i] ^= 1
		return c
	}
	for _, tc := range []struct {
		name   string
		s      *Sealer
		sealed []byte
		ad     string
	}{
		{"other associated data", s, sealed, "app-2"},
		{"other purpose", otherPurpose, sealed, "app-1"},
		{"other secret", otherSecret, sealed, "app-1"},
		{"tampered tag", s, tamper(len(sealed) - 1), "app-1"},
		{"tampered nonce", s, tamper(1), "app-1"},
		{"unknown version", s, tamper(0), "app-1"},
		{"truncated", s, sealed[:12], "app-1"},
		{"empty", s, nil, "app-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.s.Open(tc.sealed, []byte(tc.ad)); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %v, want ErrOpen", err)
			}
		})
	}
}

func TestNewNeedsASecret(t *testing.T) {
	t.Parallel()
	if _, err := New("", "p"); err == nil {
		t.Fatal("New with an empty secret succeeded")
	}
}

// FuzzOpen: Open never panics and fails only with ErrOpen; a sealed value
// opens to its plaintext with its associated data, and with one bit
// flipped anywhere it does not open at all.
func FuzzOpen(f *testing.F) {
	s, err := New(secret, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s.Seal([]byte("v"), []byte("ad")), []byte("ad"), []byte("v"), uint16(0))
	f.Add([]byte{Version}, []byte(""), []byte(""), uint16(300))
	f.Add(bytes.Repeat([]byte{Version}, 40), []byte("x"), []byte("y"), uint16(65535))
	f.Fuzz(func(t *testing.T, arbitrary, ad, plaintext []byte, flip uint16) {
		if _, err := s.Open(arbitrary, ad); err != nil && !errors.Is(err, ErrOpen) {
			t.Fatalf("Open(%x) = %v, want nil or ErrOpen", arbitrary, err)
		}
		sealed := s.Seal(plaintext, ad)
		if got, err := s.Open(sealed, ad); err != nil || !bytes.Equal(got, plaintext) {
			t.Fatalf("a sealed value did not open: %q, %v", got, err)
		}
		sealed[int(flip)%len(sealed)] ^= 1 << (flip >> 13)
		if got, err := s.Open(sealed, ad); !errors.Is(err, ErrOpen) {
			t.Fatalf("a tampered value opened to %q (%v)", got, err)
		}
	})
}
