package sandbox

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// WeChat message push (消息推送) as the platform sends it, for WeChat and QQ
// apps: the message in XML or JSON, in plaintext, compatible (plaintext
// fields plus Encrypt) or safe mode (Encrypt only), with signature over
// (token, timestamp, nonce) and, when encrypted, msg_signature over
// (token, timestamp, nonce, Encrypt). This implementation is written
// independently of adapters/wechat's.

// Message push modes and formats.
const (
	PushModePlaintext  = "plaintext"
	PushModeCompatible = "compatible"
	PushModeSafe       = "safe"
	PushFormatXML      = "xml"
	PushFormatJSON     = "json"
)

const (
	// wechatPushPad is the PKCS#7 block the push cipher pads to.
	wechatPushPad = 32
	// wechatStaleBy is how old a stale_timestamp push is dated.
	wechatStaleBy = 10 * time.Minute
	// wechatForeignAppID is the app id a foreign_appid push carries.
	wechatForeignAppID = "wx00000000f0re1gn"
)

var wechatMsgTypeRE = regexp.MustCompile(`^[a-z_]{1,32}$`)

// wechatField is one field of a push, in order. Values are strings or
// int64 (bare numbers in XML and JSON).
type wechatField struct {
	name  string
	value any
}

// pushWeChatMessage builds user u's message for app a (WeChat or QQ) as req
// asks, signs and encrypts it, posts it to a.CallbackURL+"/messages" with
// req.Faults applied and reports what minigate answered.
func (s *Sandbox) pushWeChatMessage(ctx context.Context, a *App, u User, req PushRequest) (*Report, error) {
	if a.Platform != WeChat && a.Platform != QQ {
		return nil, fmt.Errorf("sandbox: app %s is not a WeChat or QQ app", a.ID)
	}
	if a.Messages.Token == "" || a.CallbackURL == "" {
		return nil, fmt.Errorf("sandbox: app %s has no message token or callback URL", a.ID)
	}
	mode, format, err := wechatPushModeFormat(a, req)
	if err != nil {
		return nil, err
	}
	f := req.Faults
	if f.Amount != nil || f.ForeignMerchant {
		return nil, errors.New("sandbox: amount and foreign_merchant faults apply to payment notifications only")
	}
	if mode == PushModePlaintext && (f.BadMsgSignature || f.ForeignAppID || f.TamperCiphertext) {
		return nil, errors.New("sandbox: bad_msg_signature, foreign_appid and tamper_ciphertext need compatible or safe mode")
	}
	now := s.now()
	fields, err := s.wechatPushFields(a, u, req, now)
	if err != nil {
		return nil, err
	}
	target, ctype, body, err := wechatPushRequest(a, fields, u.OpenID, mode, format, f, now)
	if err != nil {
		return nil, err
	}
	msgType, event := wechatFieldString(fields, "MsgType"), wechatFieldString(fields, "Event")
	s.wechat.recordActivity(a.ID, u.OpenID, msgType, event, now)
	rep := s.sendWithFaults(ctx, f, func(ctx context.Context) Delivery {
		return s.deliver(ctx, target, ctype, nil, body)
	})
	details := map[string]any{"mode": mode, "format": format, "openid": u.OpenID, "msg_type": msgType,
		"create_time": wechatFieldValue(fields, "CreateTime")}
	if id, ok := wechatFieldValue(fields, "MsgId").(int64); ok {
		details["msg_id"] = id
	}
	if event != "" {
		details["event"] = event
	}
	if id := wechatFieldString(fields, "MediaId"); id != "" {
		details["media_id"] = id
	}
	rep.Details = details
	rep.Sent = encodeWeChatPush(PushFormatJSON, fields)
	return rep, nil
}

// wechatPushRequest encodes fields as app a's message push in format, signs
// it for a's token at now and, in compatible and safe mode, encrypts it; it
// applies f's signing and ciphertext faults and returns the callback URL
// (with the signed query), the content type and the body.
func wechatPushRequest(a *App, fields []wechatField, openid, mode, format string, f Faults, now time.Time) (target, ctype string, body []byte, err error) {
	plain := encodeWeChatPush(format, fields)
	ts := now
	if f.StaleTimestamp {
		ts = now.Add(-wechatStaleBy)
	}
	timestamp, nonce := strconv.FormatInt(ts.Unix(), 10), strconv.FormatUint(binary.BigEndian.Uint64(wechatRandomBytes(8))%1e10, 10)
	q := url.Values{}
	q.Set("signature", weChatPushSign(a.Messages.Token, timestamp, nonce))
	if f.BadSignature {
		q.Set("signature", weChatPushSign(a.Messages.Token+"-forged", timestamp, nonce))
	}
	q.Set("timestamp", timestamp)
	q.Set("nonce", nonce)
	q.Set("openid", openid)

	body = plain
	if mode != PushModePlaintext {
		appID := a.AppID
		if f.ForeignAppID {
			appID = wechatForeignAppID
		}
		ct, err := sealWeChatPush(a.Messages.EncodingAESKey, appID, plain)
		if err != nil {
			return "", "", nil, err
		}
		if f.TamperCiphertext {
			// Flipping a bit of the first block flips the same bit of the
			// length prefix in the second: the length then exceeds the
			// message. The push is signed after tampering, as a party that
			// knows the token but not the key would.
			ct[0] ^= 0x01
		}
		enc := base64.StdEncoding.EncodeToString(ct)
		msgSig := weChatPushSign(a.Messages.Token, timestamp, nonce, enc)
		if f.BadMsgSignature {
			msgSig = weChatPushSign(a.Messages.Token+"-forged", timestamp, nonce, enc)
		}
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", msgSig)
		outer := []wechatField{{"ToUserName", a.OriginalID}, {"Encrypt", enc}}
		if mode == PushModeCompatible {
			outer = append(append([]wechatField{}, fields...), wechatField{"Encrypt", enc})
		}
		body = encodeWeChatPush(format, outer)
	}
	if f.Truncate {
		body = body[:len(body)/2]
	}
	ctype = "text/xml"
	if format == PushFormatJSON {
		ctype = "application/json"
	}
	return strings.TrimRight(a.CallbackURL, "/") + "/messages?" + q.Encode(), ctype, body, nil
}

// wechatPushModeFormat resolves the push's mode and format from the request
// and the app's defaults.
func wechatPushModeFormat(a *App, req PushRequest) (string, string, error) {
	mode, format := req.Mode, req.Format
	if mode == "" {
		mode = a.Messages.Mode
	}
	if mode == "" {
		mode = PushModeSafe
		if a.Messages.EncodingAESKey == "" {
			mode = PushModePlaintext
		}
	}
	if format == "" {
		format = a.Messages.Format
	}
	if format == "" {
		format = PushFormatXML
	}
	switch mode {
	case PushModePlaintext:
	case PushModeCompatible, PushModeSafe:
		if a.Messages.EncodingAESKey == "" {
			return "", "", fmt.Errorf("sandbox: app %s has no EncodingAESKey for %s mode", a.ID, mode)
		}
	default:
		return "", "", fmt.Errorf("sandbox: unknown push mode %q (plaintext, compatible, safe)", mode)
	}
	if format != PushFormatXML && format != PushFormatJSON {
		return "", "", fmt.Errorf("sandbox: unknown push format %q (xml, json)", format)
	}
	return mode, format, nil
}

// wechatPushFields builds the message's fields in the platform's order.
func (s *Sandbox) wechatPushFields(a *App, u User, req PushRequest, now time.Time) ([]wechatField, error) {
	typ := req.Type
	if typ == "" {
		typ = "text"
	}
	if !wechatMsgTypeRE.MatchString(typ) {
		return nil, fmt.Errorf("sandbox: bad message type %q", typ)
	}
	createTime := req.CreateTime
	if createTime == 0 {
		createTime = now.Unix()
	}
	msgID := req.MsgID
	if msgID == 0 {
		msgID = int64(binary.BigEndian.Uint64(wechatRandomBytes(8))>>2) + 1
	}
	fields := []wechatField{
		{"ToUserName", a.OriginalID}, {"FromUserName", u.OpenID},
		{"CreateTime", createTime}, {"MsgType", typ},
	}
	media := func(id string) string {
		if id == "" {
			id = s.storeWeChatMedia(a.ID, "image/png", samplePNG())
		}
		return id
	}
	switch typ {
	case "text":
		if req.Content == "" {
			return nil, errors.New("sandbox: a text message needs content")
		}
		fields = append(fields, wechatField{"Content", req.Content}, wechatField{"MsgId", msgID})
	case "image":
		id := media(req.MediaID)
		fields = append(fields, wechatField{"PicUrl", "http://mmbiz.qpic.cn/sandbox/" + id},
			wechatField{"MediaId", id}, wechatField{"MsgId", msgID})
	case "miniprogrampage":
		title, page := req.Title, req.PagePath
		if title == "" {
			title = "Sandbox page"
		}
		if page == "" {
			page = "pages/index/index"
		}
		thumb := media(req.ThumbMediaID)
		fields = append(fields, wechatField{"MsgId", msgID}, wechatField{"Title", title},
			wechatField{"AppId", a.AppID}, wechatField{"PagePath", page},
			wechatField{"ThumbUrl", "http://mmbiz.qpic.cn/sandbox/" + thumb}, wechatField{"ThumbMediaId", thumb})
	case "event":
		event := req.Event
		if event == "" {
			event = "user_enter_tempsession"
		}
		if !wechatMsgTypeRE.MatchString(event) {
			return nil, fmt.Errorf("sandbox: bad event %q", event)
		}
		fields = append(fields, wechatField{"Event", event})
		if event == "user_enter_tempsession" {
			fields = append(fields, wechatField{"SessionFrom", req.SessionFrom})
		}
	default:
		// A type minigate does not know: sent with whatever was given.
		if req.Content != "" {
			fields = append(fields, wechatField{"Content", req.Content})
		}
		fields = append(fields, wechatField{"MsgId", msgID})
	}
	return fields, nil
}

func wechatFieldValue(fields []wechatField, name string) any {
	for _, f := range fields {
		if f.name == name {
			return f.value
		}
	}
	return nil
}

func wechatFieldString(fields []wechatField, name string) string {
	s, _ := wechatFieldValue(fields, name).(string)
	return s
}

// encodeWeChatPush writes fields as the platform does: XML with CDATA
// strings and bare numbers inside <xml>, or a flat JSON object.
func encodeWeChatPush(format string, fields []wechatField) []byte {
	var b bytes.Buffer
	if format == PushFormatJSON {
		b.WriteByte('{')
		for i, f := range fields {
			if i > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(f.name)
			b.Write(k)
			b.WriteByte(':')
			if nested, ok := f.value.([]wechatField); ok {
				b.Write(encodeWeChatPush(format, nested))
				continue
			}
			v, _ := json.Marshal(f.value)
			b.Write(v)
		}
		b.WriteByte('}')
		return b.Bytes()
	}
	b.WriteString("<xml>")
	writeWeChatPushXML(&b, fields)
	b.WriteString("</xml>")
	return b.Bytes()
}

// writeWeChatPushXML writes fields as XML elements; nested fields become
// child elements.
func writeWeChatPushXML(b *bytes.Buffer, fields []wechatField) {
	for _, f := range fields {
		fmt.Fprintf(b, "<%s>", f.name)
		switch v := f.value.(type) {
		case []wechatField:
			writeWeChatPushXML(b, v)
		case int64:
			b.WriteString(strconv.FormatInt(v, 10))
		case string:
			b.WriteString("<![CDATA[" + strings.ReplaceAll(v, "]]>", "]]]]><![CDATA[>") + "]]>")
		}
		fmt.Fprintf(b, "</%s>", f.name)
	}
}

// weChatPushSign is sha1 hex over the sorted, concatenated parts.
func weChatPushSign(parts ...string) string {
	p := append([]string(nil), parts...)
	sort.Strings(p)
	h := sha1.New()
	for _, s := range p {
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sealWeChatPush encrypts msg for the push: AES-256-CBC with key =
// base64(EncodingAESKey+"="), IV = key[:16], over random16 ‖ uint32 BE
// len(msg) ‖ msg ‖ appID, PKCS#7-padded to a multiple of 32 bytes.
func sealWeChatPush(encodingAESKey, appID string, msg []byte) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("sandbox: EncodingAESKey is not base64 of 32 bytes")
	}
	var p bytes.Buffer
	p.Write(wechatRandomBytes(16))
	if err := binary.Write(&p, binary.BigEndian, uint32(len(msg))); err != nil {
		return nil, err
	}
	p.Write(msg)
	p.WriteString(appID)
	n := wechatPushPad - p.Len()%wechatPushPad
	p.Write(bytes.Repeat([]byte{byte(n)}, n))
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := p.Bytes()
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, out)
	return out, nil
}

func wechatRandomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("sandbox: crypto/rand: " + err.Error())
	}
	return b
}
