package customerservice

import (
	"io"
	"mime/multipart"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/httpx"
)

// MediaField is the multipart field that carries an image, in uploads and
// in image sends (the name WeChat's media/upload uses).
const MediaField = "media"

// Mount registers the operator routes (API key) on r:
//
//	POST /v1/apps/:app/messages                          send (JSON, or multipart with an image) → 201 message
//	GET  /v1/apps/:app/conversations?cursor&limit&unanswered  inbox, newest activity first
//	GET  /v1/apps/:app/conversations/:openid/messages?cursor&limit&order=asc|desc
//	POST /v1/apps/:app/conversations/:openid/typing      {"typing": bool} → 204
//	POST /v1/apps/:app/media                             multipart image → 201 {media_id, expires_at, …}
//	GET  /v1/apps/:app/media/:media_id                   the image (cached)
//
// JSON bodies are bounded by Options.BodyLimit; image bodies by the
// server-wide limit and Options.MediaLimit.
func (s *Service) Mount(r fiber.Router, au *auth.Authenticator) {
	op := au.Operator()
	jsonLimit := httpx.LimitBody(s.opts.BodyLimit)
	r.Post("/v1/apps/:app/messages", op, func(c *fiber.Ctx) error {
		if isMultipart(c) {
			return c.Next()
		}
		return jsonLimit(c)
	}, s.handleSend)
	r.Get("/v1/apps/:app/conversations", op, s.handleConversations)
	r.Get("/v1/apps/:app/conversations/:openid/messages", op, s.handleMessages)
	r.Post("/v1/apps/:app/conversations/:openid/typing", op, jsonLimit, s.handleTyping)
	r.Post("/v1/apps/:app/media", op, s.handleUpload)
	r.Get("/v1/apps/:app/media/:media_id", op, s.handleMedia)
}

func isMultipart(c *fiber.Ctx) bool {
	return strings.HasPrefix(strings.ToLower(c.Get(fiber.HeaderContentType)), fiber.MIMEMultipartForm)
}

func (s *Service) handleSend(c *fiber.Ctx) error {
	var req SendRequest
	if isMultipart(c) {
		form, err := c.MultipartForm()
		if err != nil {
			return apperr.Wrap(err, apperr.Invalid, "invalid_multipart", "the body is not a valid multipart form")
		}
		if req, err = s.multipartSend(form); err != nil {
			return err
		}
	} else if err := httpx.BindJSON(c, &req); err != nil {
		return err
	}
	m, err := s.Send(c.UserContext(), c.Params("app"), req, auth.FromCtx(c).KeyName)
	if err != nil {
		return adapters.ToAppError(err)
	}
	return c.Status(fiber.StatusCreated).JSON(m)
}

// multipartSend reads a multipart send: text fields named as in JSON, and
// the image in MediaField.
func (s *Service) multipartSend(form *multipart.Form) (SendRequest, error) {
	var req SendRequest
	targets := map[string]*string{
		"to": &req.To, "type": &req.Type, "content": &req.Content, "media_id": &req.MediaID, "title": &req.Title,
		"description": &req.Description, "url": &req.URL, "thumb_url": &req.ThumbURL, "page_path": &req.PagePath,
		"thumb_media_id": &req.ThumbMediaID,
	}
	for name, vs := range form.Value {
		p, ok := targets[name]
		if !ok {
			return req, invalid(name, "unknown field %q", name)
		}
		if len(vs) != 1 {
			return req, invalid(name, "%s given %d times", name, len(vs))
		}
		*p = vs[0]
	}
	for name := range form.File {
		if name != MediaField {
			return req, invalid(name, "unknown file field %q (the image goes in %q)", name, MediaField)
		}
	}
	if files := form.File[MediaField]; len(files) > 0 {
		img, err := s.readImage(files)
		if err != nil {
			return req, err
		}
		req.Image = img
	}
	return req, nil
}

// readImage reads the one image of a multipart field, refusing oversize
// files before reading them.
func (s *Service) readImage(files []*multipart.FileHeader) (*Image, error) {
	if len(files) != 1 {
		return nil, invalid(MediaField, "send exactly one file in %q", MediaField)
	}
	fh := files[0]
	if fh.Size > int64(s.opts.MediaLimit) {
		return nil, apperr.Newf(apperr.TooLarge, "media_too_large", "the image exceeds %d bytes", s.opts.MediaLimit).
			WithDetail("limit", s.opts.MediaLimit)
	}
	f, err := fh.Open()
	if err != nil {
		return nil, apperr.Wrap(err, apperr.Invalid, "invalid_multipart", "the image part cannot be read")
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(s.opts.MediaLimit)+1))
	if err != nil {
		return nil, apperr.Wrap(err, apperr.Invalid, "invalid_multipart", "the image part cannot be read")
	}
	return &Image{Filename: fh.Filename, Data: data}, nil
}

func (s *Service) handleConversations(c *fiber.Ctx) error {
	q := ConversationQuery{Cursor: c.Query("cursor")}
	var err error
	if q.Limit, err = limitParam(c); err != nil {
		return err
	}
	switch v := c.Query("unanswered"); v {
	case "", "false":
	case "true":
		q.Unanswered = true
	default:
		return invalid("unanswered", "unanswered must be true or false")
	}
	page, err := s.Conversations(c.UserContext(), c.Params("app"), q)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

func (s *Service) handleMessages(c *fiber.Ctx) error {
	q := MessageQuery{Cursor: c.Query("cursor")}
	var err error
	if q.Limit, err = limitParam(c); err != nil {
		return err
	}
	switch c.Query("order") {
	case "", "asc":
	case "desc":
		q.Newest = true
	default:
		return invalid("order", "order must be asc or desc")
	}
	page, err := s.Messages(c.UserContext(), c.Params("app"), c.Params("openid"), q)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

func limitParam(c *fiber.Ctx) (int, error) {
	v := c.Query("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxPageSize {
		return 0, invalid("limit", "limit must be between 1 and %d", MaxPageSize)
	}
	return n, nil
}

type typingBody struct {
	Typing *bool `json:"typing"`
}

func (s *Service) handleTyping(c *fiber.Ctx) error {
	var b typingBody
	if err := httpx.BindJSON(c, &b); err != nil {
		return err
	}
	if b.Typing == nil {
		return invalid("typing", "typing is required: true or false")
	}
	if err := s.SetTyping(c.UserContext(), c.Params("app"), c.Params("openid"), *b.Typing); err != nil {
		return adapters.ToAppError(err)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Service) handleUpload(c *fiber.Ctx) error {
	if !isMultipart(c) {
		return apperr.New(apperr.Invalid, "invalid_multipart", "upload the image as multipart/form-data, field "+MediaField)
	}
	form, err := c.MultipartForm()
	if err != nil {
		return apperr.Wrap(err, apperr.Invalid, "invalid_multipart", "the body is not a valid multipart form")
	}
	files := form.File[MediaField]
	if len(files) == 0 {
		return invalid(MediaField, "no file in field %q", MediaField)
	}
	img, err := s.readImage(files)
	if err != nil {
		return err
	}
	info, err := s.UploadImage(c.UserContext(), c.Params("app"), *img)
	if err != nil {
		return adapters.ToAppError(err)
	}
	return c.Status(fiber.StatusCreated).JSON(info)
}

func (s *Service) handleMedia(c *fiber.Ctx) error {
	m, err := s.Media(c.UserContext(), c.Params("app"), c.Params("media_id"))
	if err != nil {
		return adapters.ToAppError(err)
	}
	ttl := max(int(m.ExpiresAt.Sub(s.now())/time.Second), 0)
	c.Set(fiber.HeaderContentType, m.ContentType)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderCacheControl, "private, max-age="+strconv.Itoa(ttl))
	c.Set(fiber.HeaderETag, `"`+m.SHA256+`"`)
	if match := c.Get(fiber.HeaderIfNoneMatch); match != "" && match == `"`+m.SHA256+`"` {
		return c.SendStatus(fiber.StatusNotModified)
	}
	return c.Send(m.Data)
}
