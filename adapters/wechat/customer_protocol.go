package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minigate/minigate/adapters"
	customerservice "github.com/minigate/minigate/customer-service"
)

// API names of the customer-service calls, in PlatformErrors and metrics.
const (
	apiCustomSend   = "custom/send"
	apiCustomTyping = "custom/typing"
	apiMediaUpload  = "media/upload"
	apiMediaGet     = "media/get"
)

const (
	// maxCustomerAnswer bounds the JSON answers of the customer-service APIs.
	maxCustomerAnswer = 64 << 10
	// maxMediaAnswer bounds a media/get download.
	maxMediaAnswer = 32 << 20
)

// WeChat errcodes the customer-service adapter treats specially.
const (
	errcodeTypingNoExchange = 45080 // typing needs a message exchanged in the last 30 s
	errcodeAlreadyTyping    = 45081 // the typing indicator is already on
)

// CustomerReason classifies the errcodes of the customer-service APIs:
// WeChat's common server-API codes (45015 window closed, 45047 quota,
// 40003 openid, 40007 media id, -1 busy, 40001/40014/42001 token, …) and
// those only typing and media answer.
func CustomerReason(code int64) adapters.Reason {
	switch code {
	case errcodeTypingNoExchange:
		return adapters.ReasonWindowClosed
	case 45072, // bad typing command
		40004, 40005, 40009, 41005, // media type, file type, image size, media data missing
		40008, 44002, 45002: // message type, empty body, content too long
		return adapters.ReasonInvalidRequest
	}
	return miniprogramReason(code)
}

// CustomerProtocol is WeChat's customer-service protocol spoken over
// net/http at a configurable base URL: custom/send, custom/typing,
// media/upload and media/get, with the access token in the query. The
// WeChat adapter uses it for typing and media (silenceper's mini-program
// package has neither) and sends through silenceper; the QQ adapter uses
// it for everything, QQ's customer service being modelled on WeChat's.
// When the platform says the token is invalid, it asks Tokens for a new one
// once and repeats the call once.
type CustomerProtocol struct {
	// Platform names the platform in PlatformErrors and metrics.
	Platform string
	// Base is the API's base URL, without a trailing slash.
	Base   string
	HTTP   *http.Client
	Tokens adapters.TokenSource
	// Reason classifies errcodes (CustomerReason for WeChat's codes).
	Reason func(code int64) adapters.Reason
	// Now is the clock for media expiry when the platform omits
	// created_at.
	Now func() time.Time
}

var _ customerservice.Platform = (*CustomerProtocol)(nil)

// customerMessage is the custom/send body.
type customerMessage struct {
	ToUser          string               `json:"touser"`
	MsgType         string               `json:"msgtype"`
	Text            *customerText        `json:"text,omitempty"`
	Image           *customerMedia       `json:"image,omitempty"`
	Link            *customerLink        `json:"link,omitempty"`
	MiniProgramPage *customerMiniProgram `json:"miniprogrampage,omitempty"`
}

type customerText struct {
	Content string `json:"content"`
}

type customerMedia struct {
	MediaID string `json:"media_id"`
}

type customerLink struct {
	Title       string `json:"title"`
	Description string `json:"description"`
	URL         string `json:"url"`
	ThumbURL    string `json:"thumb_url"`
}

type customerMiniProgram struct {
	Title        string `json:"title"`
	PagePath     string `json:"pagepath"`
	ThumbMediaID string `json:"thumb_media_id"`
}

func newCustomerMessage(m customerservice.Outbound) (customerMessage, error) {
	out := customerMessage{ToUser: m.To, MsgType: m.Type}
	switch m.Type {
	case customerservice.TypeText:
		out.Text = &customerText{Content: m.Content}
	case customerservice.TypeImage:
		out.Image = &customerMedia{MediaID: m.MediaID}
	case customerservice.TypeLink:
		out.Link = &customerLink{Title: m.Title, Description: m.Description, URL: m.URL, ThumbURL: m.ThumbURL}
	case customerservice.TypeMiniProgramPage:
		out.MiniProgramPage = &customerMiniProgram{Title: m.Title, PagePath: m.PagePath, ThumbMediaID: m.ThumbMediaID}
	default:
		return out, fmt.Errorf("unknown message type %q", m.Type)
	}
	return out, nil
}

// SendMessage posts m to custom/send.
func (p *CustomerProtocol) SendMessage(ctx context.Context, m customerservice.Outbound) error {
	body, err := newCustomerMessage(m)
	if err != nil {
		return fmt.Errorf("%s: customer-service send: %w", p.Platform, err)
	}
	err = p.withToken(ctx, func(token string) error {
		return p.postJSON(ctx, apiCustomSend, "/cgi-bin/message/custom/send", token, body)
	})
	if err != nil {
		return fmt.Errorf("%s: customer-service send: %w", p.Platform, err)
	}
	return nil
}

// SetTyping posts Typing or CancelTyping to custom/typing. "Already typing"
// (45081) is the state asked for, so it is success.
func (p *CustomerProtocol) SetTyping(ctx context.Context, openid string, typing bool) error {
	command := "CancelTyping"
	if typing {
		command = "Typing"
	}
	body := struct {
		ToUser  string `json:"touser"`
		Command string `json:"command"`
	}{openid, command}
	err := p.withToken(ctx, func(token string) error {
		return p.postJSON(ctx, apiCustomTyping, "/cgi-bin/message/custom/typing", token, body)
	})
	if pe, ok := adapters.AsPlatformError(err); ok && typing && pe.Code == strconv.Itoa(errcodeAlreadyTyping) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: typing: %w", p.Platform, err)
	}
	return nil
}

// UploadImage posts img to media/upload (type image, multipart field
// "media"); the media expires three days after the platform's created_at.
func (p *CustomerProtocol) UploadImage(ctx context.Context, img customerservice.Image) (customerservice.Uploaded, error) {
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="media"; filename=%q`, img.Filename))
	h.Set("Content-Type", img.ContentType)
	part, err := w.CreatePart(h)
	if err == nil {
		_, err = part.Write(img.Data)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return customerservice.Uploaded{}, fmt.Errorf("%s: media upload: %w", p.Platform, err)
	}
	type answer struct {
		errAnswer
		Type      string `json:"type"`
		MediaID   string `json:"media_id"`
		CreatedAt int64  `json:"created_at"`
	}
	var ans answer
	err = p.withToken(ctx, func(token string) error {
		ans = answer{} // a retry's answer must not inherit the refusal's errcode
		return p.do(ctx, apiMediaUpload, http.MethodPost, "/cgi-bin/media/upload", url.Values{"type": {"image"}}, token,
			w.FormDataContentType(), body.Bytes(), &ans)
	})
	if err == nil && ans.MediaID == "" {
		err = p.badResponse(apiMediaUpload, "no media_id in the answer")
	}
	if err != nil {
		return customerservice.Uploaded{}, fmt.Errorf("%s: media upload: %w", p.Platform, err)
	}
	created := p.now()
	if ans.CreatedAt > 0 {
		created = time.Unix(ans.CreatedAt, 0)
	}
	return customerservice.Uploaded{MediaID: ans.MediaID, ExpiresAt: created.Add(customerservice.MediaTTL)}, nil
}

// FetchMedia downloads media/get. The platform answers the bytes, or JSON
// with an errcode (40007 for an unknown or expired id).
func (p *CustomerProtocol) FetchMedia(ctx context.Context, mediaID string) (customerservice.Media, error) {
	var m customerservice.Media
	err := p.withToken(ctx, func(token string) error {
		var err error
		m, err = p.fetchOnce(ctx, mediaID, token)
		return err
	})
	if err != nil {
		return customerservice.Media{}, fmt.Errorf("%s: media get: %w", p.Platform, err)
	}
	return m, nil
}

func (p *CustomerProtocol) fetchOnce(ctx context.Context, mediaID, token string) (customerservice.Media, error) {
	start := time.Now()
	resp, err := p.send(ctx, apiMediaGet, http.MethodGet, "/cgi-bin/media/get", url.Values{"media_id": {mediaID}}, token, "", nil)
	if err != nil {
		return customerservice.Media{}, p.observed(apiMediaGet, start, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxMediaAnswer+1))
	if err != nil {
		return customerservice.Media{}, p.observed(apiMediaGet, start, adapters.TransportError(p.Platform, apiMediaGet, err))
	}
	ct := resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode != http.StatusOK:
		err = p.statusError(apiMediaGet, resp.StatusCode)
	case len(data) > maxMediaAnswer:
		err = p.badResponse(apiMediaGet, fmt.Sprintf("media larger than %d bytes", maxMediaAnswer))
	case !strings.HasPrefix(ct, "image/") && bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")):
		// An error answer (sent as application/json or text/plain).
		var ans errAnswer
		if jerr := json.Unmarshal(data, &ans); jerr != nil || ans.ErrCode == 0 {
			err = p.badResponse(apiMediaGet, "a JSON answer without media or errcode")
		} else {
			err = p.platformError(apiMediaGet, ans)
		}
	case len(data) == 0:
		err = p.badResponse(apiMediaGet, "empty media")
	}
	if err != nil {
		return customerservice.Media{}, p.observed(apiMediaGet, start, err)
	}
	adapters.Observe(p.Platform, apiMediaGet, start, nil)
	return customerservice.Media{ContentType: ct, Data: data}, nil
}

// withToken makes call with the app's access token and, when the platform
// says it is invalid, once more with a refreshed one.
func (p *CustomerProtocol) withToken(ctx context.Context, call func(token string) error) error {
	if p.Tokens == nil {
		return errors.New("no access token source configured")
	}
	token, err := p.Tokens.Token(ctx)
	if err != nil {
		return fmt.Errorf("access token: %w", err)
	}
	err = call(token)
	if !adapters.HasReason(err, adapters.ReasonInvalidToken) {
		return err
	}
	if token, err = p.Tokens.Refresh(ctx, token); err != nil {
		return fmt.Errorf("refresh access token: %w", err)
	}
	return call(token)
}

// errAnswer is the error part of every answer.
type errAnswer struct {
	ErrCode int64  `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// postJSON posts body as JSON and checks the errcode of the answer.
func (p *CustomerProtocol) postJSON(ctx context.Context, api, path, token string, body any) error {
	// Characters go as they are (as silenceper sends them), not as
	// \u003c-style HTML escapes.
	var raw bytes.Buffer
	enc := json.NewEncoder(&raw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return err
	}
	var ans errAnswer
	return p.do(ctx, api, http.MethodPost, path, nil, token, "application/json", raw.Bytes(), &ans)
}

// do makes one call and decodes its JSON answer into out, whose embedded
// errAnswer is checked. It records the call's metrics.
func (p *CustomerProtocol) do(ctx context.Context, api, method, path string, q url.Values, token, ctype string, body []byte, out interface{ status() errAnswer }) error {
	start := time.Now()
	resp, err := p.send(ctx, api, method, path, q, token, ctype, body)
	if err != nil {
		return p.observed(api, start, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxCustomerAnswer))
	switch {
	case err != nil:
		err = adapters.TransportError(p.Platform, api, err)
	case resp.StatusCode != http.StatusOK:
		err = p.statusError(api, resp.StatusCode)
	case json.Unmarshal(raw, out) != nil:
		err = p.badResponse(api, "the answer is not the expected JSON")
	case out.status().ErrCode != 0:
		err = p.platformError(api, out.status())
	}
	return p.observed(api, start, err)
}

func (a *errAnswer) status() errAnswer { return *a }

// send makes the HTTP request. Transport errors are PlatformErrors whose
// URL has no query (it holds the access token).
func (p *CustomerProtocol) send(ctx context.Context, api, method, path string, q url.Values, token, ctype string, body []byte) (*http.Response, error) {
	if q == nil {
		q = url.Values{}
	}
	q.Set("access_token", token)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.Base+path+"?"+q.Encode(), rd)
	if err != nil {
		return nil, &adapters.PlatformError{Platform: p.Platform, API: api, Reason: adapters.ReasonUnreachable,
			Err: redactTransportError(err)}
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := p.HTTP.Do(req)
	if err != nil {
		return nil, adapters.TransportError(p.Platform, api, redactTransportError(err))
	}
	return resp, nil
}

func (p *CustomerProtocol) platformError(api string, a errAnswer) *adapters.PlatformError {
	return &adapters.PlatformError{Platform: p.Platform, API: api, Reason: p.Reason(a.ErrCode),
		HTTPStatus: http.StatusOK, Code: strconv.FormatInt(a.ErrCode, 10), Message: a.ErrMsg}
}

func (p *CustomerProtocol) badResponse(api, msg string) *adapters.PlatformError {
	return &adapters.PlatformError{Platform: p.Platform, API: api, Reason: adapters.ReasonBadResponse, Message: msg}
}

// statusError classifies an HTTP status other than 200: 5xx is the
// platform in trouble (busy, retried), anything else an unusable answer.
func (p *CustomerProtocol) statusError(api string, status int) *adapters.PlatformError {
	reason := adapters.ReasonBadResponse
	if status >= 500 {
		reason = adapters.ReasonBusy
	}
	return &adapters.PlatformError{Platform: p.Platform, API: api, Reason: reason, HTTPStatus: status,
		Message: "unexpected HTTP status " + strconv.Itoa(status)}
}

// observed records one call's metrics and returns its error.
func (p *CustomerProtocol) observed(api string, start time.Time, err error) error {
	adapters.Observe(p.Platform, api, start, err)
	return err
}

func (p *CustomerProtocol) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}
