package customerservice

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/apperr"
)

// Media origins.
const (
	OriginUpload  = "upload"  // uploaded through minigate
	OriginInbound = "inbound" // sent by a user
)

// imageTypes are the image formats the platforms accept as temporary
// media, by sniffed content type.
var imageTypes = map[string]bool{"image/png": true, "image/jpeg": true, "image/gif": true}

// MediaInfo describes a temporary media id minigate knows.
type MediaInfo struct {
	MediaID     string    `json:"media_id"`
	ExpiresAt   time.Time `json:"expires_at"`
	ContentType string    `json:"content_type,omitempty"`
	Size        int       `json:"size,omitempty"`
	Origin      string    `json:"origin"`
}

// StoredMedia is a media's bytes as served to operators.
type StoredMedia struct {
	MediaInfo
	SHA256 string
	Data   []byte
}

type mediaRow struct {
	App         string    `db:"app"`
	MediaID     string    `db:"media_id"`
	Origin      string    `db:"origin"`
	ContentType string    `db:"content_type"`
	Size        int       `db:"size"`
	SHA256      string    `db:"sha256"`
	Data        []byte    `db:"data"`
	ExpiresAt   time.Time `db:"expires_at"`
	CreatedAt   time.Time `db:"created_at"`
}

func (r mediaRow) stored() *StoredMedia {
	return &StoredMedia{
		MediaInfo: MediaInfo{MediaID: r.MediaID, ExpiresAt: r.ExpiresAt, ContentType: r.ContentType, Size: r.Size, Origin: r.Origin},
		SHA256:    r.SHA256, Data: r.Data,
	}
}

var (
	errMediaNotFound = apperr.New(apperr.NotFound, "media_not_found",
		"minigate knows no such media id for this app (only ids uploaded through minigate or sent by users)")
	errMediaExpired = apperr.New(apperr.NotFound, "media_expired",
		"this media id has expired (temporary media lives 3 days at the platform)")
)

// checkImage refuses images over the size limit and anything that does
// not sniff as PNG, JPEG or GIF, and sets img.ContentType to the sniffed
// type.
func (s *Service) checkImage(img *Image) error {
	switch {
	case len(img.Data) == 0:
		return invalid("media", "the image file is empty")
	case len(img.Data) > s.opts.MediaLimit:
		return apperr.Newf(apperr.TooLarge, "media_too_large", "the image exceeds %d bytes", s.opts.MediaLimit).
			WithDetail("limit", s.opts.MediaLimit)
	}
	ct := http.DetectContentType(img.Data)
	if !imageTypes[ct] {
		return apperr.Newf(apperr.Invalid, "unsupported_media_type",
			"only PNG, JPEG and GIF images can be uploaded (the file looks like %s)", ct).WithDetail("field", "media")
	}
	img.ContentType = ct
	if img.Filename == "" || len(img.Filename) > maxFieldBytes || strings.ContainsAny(img.Filename, "\"\\/\r\n") {
		img.Filename = "image." + strings.TrimPrefix(ct, "image/")
	}
	return nil
}

// UploadImage checks img (size, sniffed type) and uploads it as temporary
// media; the bytes are kept, so downloads of the id are served by minigate.
func (s *Service) UploadImage(ctx context.Context, appID string, img Image) (*MediaInfo, error) {
	a, err := s.app(appID)
	if err != nil {
		return nil, err
	}
	if err := s.checkImage(&img); err != nil {
		return nil, err
	}
	info, err := s.upload(ctx, a, &img)
	if err != nil {
		return nil, adapters.ToAppError(err)
	}
	return info, nil
}

// upload uploads a checked image and stores it.
func (s *Service) upload(ctx context.Context, a *App, img *Image) (*MediaInfo, error) {
	var up Uploaded
	err := s.retryBusy(ctx, func() error {
		var err error
		up, err = a.CustomerService.UploadImage(ctx, *img)
		return err
	})
	if err != nil {
		return nil, err
	}
	if up.ExpiresAt.IsZero() {
		up.ExpiresAt = s.now().Add(MediaTTL)
	}
	now := s.now()
	sum := sha256.Sum256(img.Data)
	info := &MediaInfo{MediaID: up.MediaID, ExpiresAt: up.ExpiresAt.UTC().Truncate(time.Microsecond),
		ContentType: img.ContentType, Size: len(img.Data), Origin: OriginUpload}
	if _, err := s.db.ExecContext(ctx, MediaInsertUpload, a.ID, info.MediaID, info.ContentType, info.Size,
		hex.EncodeToString(sum[:]), img.Data, info.ExpiresAt, now); err != nil {
		return nil, fmt.Errorf("customerservice: store uploaded media: %w", err)
	}
	s.purgeExpired(ctx, a.ID, now)
	return info, nil
}

// purgeExpired drops the cached bytes of a few expired media of app. It is
// housekeeping: a failure is logged, not returned.
func (s *Service) purgeExpired(ctx context.Context, app string, now time.Time) {
	if _, err := s.db.ExecContext(ctx, MediaPurgeExpired, app, now); err != nil {
		s.log.WarnContext(ctx, "customer-service: purge expired media", "app", app, "err", err)
	}
}

// Media returns a media's bytes: from Postgres when cached, else fetched
// from the platform once (concurrent downloads in this process share the
// fetch) and cached. Only ids minigate knows are served: uploaded through
// it, or sent by users; expired ids answer 404 media_expired.
func (s *Service) Media(ctx context.Context, appID, mediaID string) (*StoredMedia, error) {
	a, err := s.knownApp(appID)
	if err != nil {
		return nil, err
	}
	if err := checkField("media_id", mediaID, maxFieldBytes, true); err != nil {
		return nil, err
	}
	row, err := s.mediaRow(ctx, a.ID, mediaID)
	if err != nil {
		return nil, err
	}
	if !s.now().Before(row.ExpiresAt) {
		return nil, errMediaExpired
	}
	if row.Data != nil {
		return row.stored(), nil
	}
	if err := available(a); err != nil {
		return nil, err
	}
	return s.fetches.do(a.ID+"\x00"+mediaID, func() (*StoredMedia, error) { return s.fetch(ctx, a, row) })
}

func (s *Service) mediaRow(ctx context.Context, app, mediaID string) (*mediaRow, error) {
	var row mediaRow
	err := s.db.GetContext(ctx, &row, MediaGet, app, mediaID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errMediaNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("customerservice: get media: %w", err)
	}
	return &row, nil
}

// fetch downloads row's bytes from the platform and caches them, unless
// another instance cached them meanwhile.
func (s *Service) fetch(ctx context.Context, a *App, row *mediaRow) (*StoredMedia, error) {
	if again, err := s.mediaRow(ctx, a.ID, row.MediaID); err != nil {
		return nil, err
	} else if again.Data != nil {
		return again.stored(), nil
	}
	var m Media
	err := s.retryBusy(ctx, func() error {
		var err error
		m, err = a.CustomerService.FetchMedia(ctx, row.MediaID)
		return err
	})
	if adapters.HasReason(err, adapters.ReasonNotFound) {
		return nil, apperr.Wrap(err, apperr.NotFound, "media_not_found",
			"the platform no longer has this media (it may have expired early)")
	}
	if err != nil {
		return nil, adapters.ToAppError(err)
	}
	ct := http.DetectContentType(m.Data)
	if !imageTypes[ct] {
		ct = "application/octet-stream"
	}
	now := s.now()
	sum := sha256.Sum256(m.Data)
	row.ContentType, row.Size, row.SHA256, row.Data = ct, len(m.Data), hex.EncodeToString(sum[:]), m.Data
	if _, err := s.db.ExecContext(ctx, MediaStoreFetched, a.ID, row.MediaID, row.ContentType, row.Size, row.SHA256,
		row.Data, now); err != nil {
		return nil, fmt.Errorf("customerservice: cache media: %w", err)
	}
	s.purgeExpired(ctx, a.ID, now)
	return row.stored(), nil
}

// flights lets concurrent callers share one call per key.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	res  *StoredMedia
	err  error
}

// do runs fn once for key at a time; callers arriving meanwhile get its
// result.
func (f *flights) do(key string, fn func() (*StoredMedia, error)) (*StoredMedia, error) {
	f.mu.Lock()
	if fl, ok := f.m[key]; ok {
		f.mu.Unlock()
		<-fl.done
		return fl.res, fl.err
	}
	fl := &flight{done: make(chan struct{})}
	f.m[key] = fl
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.m, key)
		f.mu.Unlock()
		close(fl.done)
	}()
	fl.res, fl.err = fn()
	return fl.res, fl.err
}
