package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/webhooks"
)

// messagePadBlock is the PKCS#7 block size of the message-push cipher: WeChat
// pads to a multiple of 32 bytes, not AES's 16.
const messagePadBlock = 32

// MessageCodec verifies, decrypts and parses pushes in WeChat's message-push
// protocol (消息推送), which QQ mini-programs use too. It implements
// webhooks.MessageVerifier.
//
// Every request must carry a valid signature = sha1(sort(token, timestamp,
// nonce)) and a timestamp within the window. A push with an Encrypt field
// (compatible and safe modes) must also carry a valid msg_signature over
// Encrypt; it is decrypted and only the decrypted copy is trusted. In
// plaintext mode the protocol signs the query only, not the body.
type MessageCodec struct {
	appID  string
	token  string
	key    []byte // nil: no EncodingAESKey, plaintext mode only
	window time.Duration
	now    func() time.Time
}

var _ webhooks.MessageVerifier = (*MessageCodec)(nil)

// NewMessageCodec returns a codec for the mini-program appID with the
// console's Token and EncodingAESKey (empty for plaintext mode). window is
// how far a push's timestamp may be from now either way
// (config.DefaultCallbackWindow when zero); now is the clock (time.Now when
// nil).
func NewMessageCodec(appID, token, encodingAESKey string, window time.Duration, now func() time.Time) (*MessageCodec, error) {
	if appID == "" {
		return nil, errors.New("message codec: app id is required")
	}
	if token == "" {
		return nil, errors.New("message codec: messages.token is required")
	}
	c := &MessageCodec{appID: appID, token: token, window: window, now: now}
	if encodingAESKey != "" {
		key, err := config.DecodeEncodingAESKey(encodingAESKey)
		if err != nil {
			return nil, fmt.Errorf("message codec: messages.encoding_aes_key: %w", err)
		}
		c.key = key
	}
	if c.window <= 0 {
		c.window = config.DefaultCallbackWindow
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// NewMessageVerifier returns the webhooks.MessageVerifier for app's message
// pushes, with opts.CallbackWindow and opts.Now.
func NewMessageVerifier(app *config.App, opts adapters.Options) (webhooks.MessageVerifier, error) {
	c, err := NewMessageCodec(app.AppID, app.Messages.Token, app.Messages.EncodingAESKey, opts.CallbackWindow, opts.Clock())
	if err != nil {
		return nil, fmt.Errorf("wechat: app %q: %w", app.ID, err)
	}
	return c, nil
}

// VerifyURL checks a GET URL-verification request (signature, timestamp
// window) and returns echostr.
func (c *MessageCodec) VerifyURL(req webhooks.Request) (string, error) {
	if err := c.checkSignature(req); err != nil {
		return "", err
	}
	echo := req.Query.Get("echostr")
	if echo == "" {
		return "", webhooks.Reject(webhooks.RejectMalformed, "no echostr")
	}
	return echo, nil
}

// OpenMessage verifies, decrypts and parses a POSTed push.
func (c *MessageCodec) OpenMessage(req webhooks.Request) (*webhooks.Message, error) {
	if err := c.checkSignature(req); err != nil {
		return nil, err
	}
	encryptType := req.Query.Get("encrypt_type")
	if encryptType != "" && encryptType != "aes" && encryptType != "raw" {
		return nil, webhooks.Reject(webhooks.RejectUnsupported, "encrypt_type %q", truncateForDetail(encryptType))
	}
	fields, err := parsePushDocument(req.Body)
	if err != nil {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "body: %v", err)
	}
	encVal, encrypted := fields["Encrypt"]
	if !encrypted && encryptType == "aes" {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "encrypt_type=aes but no Encrypt field")
	}
	if !encrypted && c.key != nil {
		// A plaintext push is signed over the query only, not the body:
		// with an EncodingAESKey configured (compatible or safe mode) only
		// encrypted bodies prove they came from the platform.
		return nil, webhooks.Reject(webhooks.RejectUnencrypted, "plaintext push while an EncodingAESKey is configured")
	}
	if encrypted {
		enc, ok := encVal.(string)
		if !ok {
			return nil, webhooks.Reject(webhooks.RejectMalformed, "Encrypt is not a string")
		}
		plain, err := c.openEncrypted(req, strings.TrimSpace(enc))
		if err != nil {
			return nil, err
		}
		// Compatible mode also carries a plaintext copy; only the decrypted
		// one is trusted.
		if fields, err = parsePushDocument(plain); err != nil {
			return nil, webhooks.Reject(webhooks.RejectMalformed, "decrypted message: %v", err)
		}
		if _, nested := fields["Encrypt"]; nested {
			return nil, webhooks.Reject(webhooks.RejectMalformed, "decrypted message is itself encrypted")
		}
	}
	msg, err := messageFromFields(fields)
	if err != nil {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "%v", err)
	}
	return msg, nil
}

// Ack is the reply WeChat and QQ take as "received": 200 "success".
func (c *MessageCodec) Ack() webhooks.Reply {
	return webhooks.Reply{Status: http.StatusOK, ContentType: "text/plain; charset=utf-8", Body: []byte("success")}
}

// checkSignature checks signature over (token, timestamp, nonce) and then
// the timestamp window.
func (c *MessageCodec) checkSignature(req webhooks.Request) error {
	sig, ts, nonce := req.Query.Get("signature"), req.Query.Get("timestamp"), req.Query.Get("nonce")
	if sig == "" || ts == "" || nonce == "" {
		return webhooks.Reject(webhooks.RejectMissingSignature, "signature, timestamp and nonce are required")
	}
	if !equalMessageSignature(sig, messageSignature(c.token, ts, nonce)) {
		return webhooks.Reject(webhooks.RejectBadSignature, "signature does not match")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return webhooks.Reject(webhooks.RejectMalformed, "timestamp is not a number")
	}
	now := c.now()
	// Compare in seconds so huge timestamps cannot overflow a Duration.
	skew := now.Unix() - sec
	if skew > int64(c.window/time.Second) || -skew > int64(c.window/time.Second) {
		return webhooks.Reject(webhooks.RejectStaleTimestamp, "timestamp %d is %ds from now, outside ±%s", sec, skew, c.window)
	}
	return nil
}

// openEncrypted checks msg_signature over enc and decrypts it.
func (c *MessageCodec) openEncrypted(req webhooks.Request, enc string) ([]byte, error) {
	if c.key == nil {
		return nil, webhooks.Reject(webhooks.RejectUnsupported, "encrypted push but no encoding_aes_key is configured")
	}
	msgSig := req.Query.Get("msg_signature")
	if msgSig == "" {
		return nil, webhooks.Reject(webhooks.RejectMissingSignature, "msg_signature is required for encrypted pushes")
	}
	want := messageSignature(c.token, req.Query.Get("timestamp"), req.Query.Get("nonce"), enc)
	if !equalMessageSignature(msgSig, want) {
		return nil, webhooks.Reject(webhooks.RejectBadMsgSignature, "msg_signature does not match")
	}
	return c.decryptMessage(enc)
}

// decryptMessage opens base64(AES-256-CBC(random16 ‖ len ‖ msg ‖ appid))
// with IV = key[:16] and 32-byte PKCS#7 padding, and requires our app id.
func (c *MessageCodec) decryptMessage(enc string) ([]byte, error) {
	if c.key == nil {
		return nil, webhooks.Reject(webhooks.RejectUnsupported, "no encoding_aes_key is configured")
	}
	ct, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, webhooks.Reject(webhooks.RejectBadCiphertext, "not base64")
	}
	if len(ct) < messagePadBlock || len(ct)%messagePadBlock != 0 {
		return nil, webhooks.Reject(webhooks.RejectBadCiphertext, "length %d is not a positive multiple of %d", len(ct), messagePadBlock)
	}
	block, err := aes.NewCipher(c.key)
	if err != nil {
		return nil, fmt.Errorf("wechat: message cipher: %w", err)
	}
	plain := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, c.key[:aes.BlockSize]).CryptBlocks(plain, ct)

	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > messagePadBlock {
		return nil, webhooks.Reject(webhooks.RejectBadCiphertext, "bad padding")
	}
	good := 1
	for _, b := range plain[len(plain)-pad:] {
		good &= subtle.ConstantTimeByteEq(b, byte(pad))
	}
	if good != 1 {
		return nil, webhooks.Reject(webhooks.RejectBadCiphertext, "bad padding")
	}
	plain = plain[:len(plain)-pad]
	if len(plain) < 20 {
		return nil, webhooks.Reject(webhooks.RejectBadCiphertext, "plaintext too short")
	}
	n := uint64(binary.BigEndian.Uint32(plain[16:20]))
	if n > uint64(len(plain)-20) {
		return nil, webhooks.Reject(webhooks.RejectBadCiphertext, "message length %d exceeds the plaintext", n)
	}
	msg, appID := plain[20:20+n], plain[20+n:]
	if subtle.ConstantTimeCompare(appID, []byte(c.appID)) != 1 {
		return nil, webhooks.Reject(webhooks.RejectForeignApp, "the app id inside the ciphertext is not this app's")
	}
	return msg, nil
}

// messageSignature is sha1 hex of the sorted, concatenated parts: the
// signature of the query (token, timestamp, nonce) and, with Encrypt
// added, msg_signature.
func messageSignature(parts ...string) string {
	sorted := append([]string(nil), parts...)
	sort.Strings(sorted)
	sum := sha1.Sum([]byte(strings.Join(sorted, "")))
	return hex.EncodeToString(sum[:])
}

// equalMessageSignature compares a received hex signature with the expected
// lowercase one in constant time (case-insensitively).
func equalMessageSignature(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) == 1
}

// truncateForDetail bounds attacker-supplied strings quoted in reject details.
func truncateForDetail(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
