package customerservice

import (
	"context"
	"time"
)

// Outbound message types (the msgtype of a customer-service send).
const (
	TypeText            = "text"
	TypeImage           = "image"
	TypeLink            = "link"
	TypeMiniProgramPage = "miniprogrampage"
)

// MediaTTL is how long a temporary media id stays valid at the platforms
// (WeChat: three days from the upload, or from the user's message).
const MediaTTL = 72 * time.Hour

// Outbound is one customer-service message for a platform to deliver. Only
// the fields of its Type are set.
type Outbound struct {
	// To is the user's openid.
	To   string
	Type string
	// Content is a text message's text.
	Content string
	// MediaID is an image message's temporary media.
	MediaID string
	// Title is a link's or a mini-program card's title.
	Title string
	// Description, URL and ThumbURL complete a link.
	Description string
	URL         string
	ThumbURL    string
	// PagePath and ThumbMediaID complete a mini-program card.
	PagePath     string
	ThumbMediaID string
}

// Image is an image to upload as temporary media. ContentType is the
// sniffed type (image/png, image/jpeg or image/gif).
type Image struct {
	Filename    string
	ContentType string
	Data        []byte
}

// Uploaded is a platform's answer to an image upload.
type Uploaded struct {
	MediaID   string
	ExpiresAt time.Time
}

// Media is temporary media downloaded from a platform.
type Media struct {
	ContentType string
	Data        []byte
}

// Platform is a platform's customer-service API for one app. WeChat and QQ
// implement it (adapters/wechat, adapters/qq); Alipay's adapter answers
// every call with *adapters.UnsupportedError.
//
// Failures are *adapters.PlatformError. The reasons that matter here:
// reply_window_closed (WeChat 45015, typing 45080), reply_quota_exceeded
// (45047), invalid_openid (40003), not_found (media 40007), platform_busy
// (-1: the caller retries), and the transport reasons. An invalid access
// token is handled inside the adapter: it refreshes the shared token once
// and retries once.
type Platform interface {
	// SendMessage delivers m (custom/send).
	SendMessage(ctx context.Context, m Outbound) error
	// SetTyping shows (true) or cancels (false) the typing indicator for
	// openid (custom/typing).
	SetTyping(ctx context.Context, openid string, typing bool) error
	// UploadImage uploads temporary image media (media/upload).
	UploadImage(ctx context.Context, img Image) (Uploaded, error)
	// FetchMedia downloads temporary media (media/get).
	FetchMedia(ctx context.Context, mediaID string) (Media, error)
}
