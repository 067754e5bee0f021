package alipay

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/webhooks"
)

// UserMessageMethod is the msg_method minigate reads as a user's message to
// the mini-program; notifications with any other msg_method are kept as
// events named after the method. Unconfirmed: nobody here could confirm the
// real name of Alipay's mini-program chat push; the sandbox sends this one.
const UserMessageMethod = "alipay.open.mini.im.message.receive"

// MessageVerifier opens one Alipay app's message notifications: form POSTs
// in Alipay's message-service envelope (notify_id, utc_timestamp,
// msg_method, app_id, version, charset, sign_type, sign, biz_content, and
// encrypt_type=AES when biz_content is encrypted with the app's content
// key). The RSA2 signature is verified with the Alipay public key before
// anything is read; then the app, the timestamp window, and the content.
//
// A user message's biz_content is read as {msg_id, msg_type, from_user_id,
// from_open_id, to_app_id, create_time, content, media_id, pic_url, title,
// page_path, thumb_media_id, event, session_from} (unconfirmed, see
// UserMessageMethod). FromUserName is from_open_id when present, else
// from_user_id — the same identity Code2Session returns as OpenID.
type MessageVerifier struct {
	appID    string
	verifier formVerifier
	aesKey   []byte
	window   time.Duration
	now      func() time.Time
}

var _ webhooks.MessageVerifier = (*MessageVerifier)(nil)

// NewMessageVerifier returns app's message-notification verifier.
// messages.aes_key, when set, decrypts encrypted biz_content;
// Options.CallbackWindow bounds utc_timestamp's distance from now (0: no
// bound).
func NewMessageVerifier(app *config.App, opts adapters.Options) (webhooks.MessageVerifier, error) {
	c, err := newCore(app, opts)
	if err != nil {
		return nil, err
	}
	v := &MessageVerifier{appID: c.appID, verifier: c.verifier, window: opts.CallbackWindow, now: c.now}
	if app.Messages.AESKey != "" {
		key, err := base64.StdEncoding.DecodeString(app.Messages.AESKey)
		if err != nil {
			return nil, fmt.Errorf("alipay: app %s: messages.aes_key: %w", app.ID, err)
		}
		if _, err := aes.NewCipher(key); err != nil {
			return nil, fmt.Errorf("alipay: app %s: messages.aes_key: %w", app.ID, err)
		}
		v.aesKey = key
	}
	return v, nil
}

// VerifyURL is refused: Alipay has no URL-verification request.
func (v *MessageVerifier) VerifyURL(webhooks.Request) (string, error) {
	return "", webhooks.Reject(webhooks.RejectUnsupported, "Alipay sends no URL verification")
}

// Ack is Alipay's "received" reply: 200 and exactly "success".
func (v *MessageVerifier) Ack() webhooks.Reply {
	return webhooks.Reply{Status: http.StatusOK, ContentType: "text/plain; charset=utf-8", Body: []byte("success")}
}

// OpenMessage verifies, decrypts and parses one message notification.
func (v *MessageVerifier) OpenMessage(req webhooks.Request) (*webhooks.Message, error) {
	vs, err := readForm(req)
	if err != nil {
		return nil, err
	}
	if err := v.verifier.verify(context.Background(), vs, true); err != nil {
		return nil, err
	}
	if vs.Get("app_id") != v.appID {
		return nil, webhooks.Reject(webhooks.RejectForeignApp, "app_id %q", vs.Get("app_id"))
	}
	for _, k := range []string{"notify_id", "msg_method", "utc_timestamp", "biz_content"} {
		if vs.Get(k) == "" {
			return nil, webhooks.Reject(webhooks.RejectMalformed, "missing %s", k)
		}
	}
	ms, err := strconv.ParseInt(vs.Get("utc_timestamp"), 10, 64)
	if err != nil {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "utc_timestamp %q", vs.Get("utc_timestamp"))
	}
	sent := time.UnixMilli(ms)
	if v.window > 0 {
		if skew := v.now().Sub(sent); skew > v.window || skew < -v.window {
			return nil, webhooks.Reject(webhooks.RejectStaleTimestamp, "utc_timestamp is %s from now", skew.Round(time.Second))
		}
	}
	plain := []byte(vs.Get("biz_content"))
	switch et := vs.Get("encrypt_type"); {
	case et == "AES":
		if v.aesKey == nil {
			return nil, webhooks.Reject(webhooks.RejectBadCiphertext, "encrypted biz_content but no messages.aes_key configured")
		}
		if plain, err = decryptContent(v.aesKey, vs.Get("biz_content")); err != nil {
			return nil, webhooks.Reject(webhooks.RejectBadCiphertext, "biz_content does not decrypt with messages.aes_key")
		}
	case et != "":
		return nil, webhooks.Reject(webhooks.RejectUnsupported, "encrypt_type %q", et)
	}
	fields := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.UseNumber()
	if err := dec.Decode(&fields); err != nil || fields == nil || dec.More() {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "biz_content is not a JSON object")
	}
	return v.message(vs.Get("msg_method"), vs.Get("notify_id"), sent, fields)
}

// message maps a verified biz_content onto webhooks.Message.
func (v *MessageVerifier) message(method, notifyID string, sent time.Time, fields map[string]any) (*webhooks.Message, error) {
	str := func(k string) string {
		if s, ok := fields[k].(string); ok {
			return s
		}
		return ""
	}
	if to := str("to_app_id"); to != "" && to != v.appID {
		return nil, webhooks.Reject(webhooks.RejectForeignApp, "to_app_id %q", to)
	}
	msg := &webhooks.Message{
		ToUserName: v.appID, CreateTime: sent.Unix(), Fields: fields,
		DedupKey: "alipay:notify:" + notifyID,
	}
	fields["notify_id"], fields["msg_method"], fields["utc_timestamp"] = notifyID, method, sent.UnixMilli()
	if method != UserMessageMethod {
		// Another kind of message-service notification: kept as an event.
		msg.MsgType, msg.Event = "event", method
		return msg, nil
	}
	msg.FromUserName = str("from_open_id")
	if msg.FromUserName == "" {
		msg.FromUserName = str("from_user_id")
	}
	msg.MsgType = str("msg_type")
	if msg.FromUserName == "" || msg.MsgType == "" {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "message without sender or msg_type")
	}
	if id := str("msg_id"); id != "" {
		msg.DedupKey = "alipay:msg:" + id
		msg.MsgID, _ = strconv.ParseInt(id, 10, 64) // 0 when not numeric; DedupKey still identifies it
	}
	if ct, ok := fields["create_time"].(json.Number); ok {
		if sec, err := ct.Int64(); err == nil && sec > 0 {
			msg.CreateTime = sec
		}
	}
	msg.Content, msg.MediaID, msg.PicURL = str("content"), str("media_id"), str("pic_url")
	msg.Title, msg.PagePath, msg.ThumbMediaID = str("title"), str("page_path"), str("thumb_media_id")
	msg.Event, msg.SessionFrom = str("event"), str("session_from")
	return msg, nil
}

// decryptContent reverses Alipay's content encryption: base64, AES-CBC with
// a zero IV, PKCS#7 padding.
func decryptContent(key []byte, b64 string) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("alipay: ciphertext is not whole blocks")
	}
	cipher.NewCBCDecrypter(block, make([]byte, aes.BlockSize)).CryptBlocks(ct, ct)
	pad := int(ct[len(ct)-1])
	if pad < 1 || pad > aes.BlockSize {
		return nil, errors.New("alipay: bad padding")
	}
	for _, b := range ct[len(ct)-pad:] {
		if int(b) != pad {
			return nil, errors.New("alipay: bad padding")
		}
	}
	return ct[:len(ct)-pad], nil
}
