package wechat

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/minigate/minigate/webhooks"
)

// maxPushDepth bounds element/object nesting in a push document.
const maxPushDepth = 16

// parsePushDocument parses a push body (or a decrypted push) into its
// top-level fields. XML leaf elements become strings and elements with
// children become maps; JSON values keep their JSON types (numbers as
// json.Number). Documents with a DOCTYPE or any other <!…> declaration,
// duplicate JSON keys, or trailing data are refused.
func parsePushDocument(body []byte) (map[string]any, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, errors.New("empty")
	}
	switch trimmed[0] {
	case '<':
		return parsePushXML(trimmed)
	case '{':
		return parsePushJSON(trimmed)
	}
	return nil, errors.New("neither XML nor a JSON object")
}

var errPushDirective = errors.New("XML declarations (DOCTYPE, ENTITY) are not allowed")

func parsePushXML(body []byte) (map[string]any, error) {
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.Strict = true // no CharsetReader either: only UTF-8 documents
	var root map[string]any
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, errPushDirective
		case xml.StartElement:
			if root != nil {
				return nil, errors.New("XML: more than one root element")
			}
			v, err := readPushXMLElement(dec, 1)
			if err != nil {
				return nil, err
			}
			m, ok := v.(map[string]any)
			if !ok {
				return nil, errors.New("XML: the root element has no fields")
			}
			root = m
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return nil, errors.New("XML: text outside the root element")
			}
		}
	}
	if root == nil {
		return nil, errors.New("XML: no root element")
	}
	return root, nil
}

// readPushXMLElement reads the content of the element whose start tag was
// just read, up to its end tag: a string for a leaf, a map for an element
// with children (repeated children become []any).
func readPushXMLElement(dec *xml.Decoder, depth int) (any, error) {
	if depth > maxPushDepth {
		return nil, errors.New("XML: nested too deeply")
	}
	var text []byte
	var children map[string]any
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, errPushDirective
		case xml.CharData:
			text = append(text, t...)
		case xml.StartElement:
			v, err := readPushXMLElement(dec, depth+1)
			if err != nil {
				return nil, err
			}
			if children == nil {
				children = map[string]any{}
			}
			// Repeated elements (wxa_media_check's <detail>) become a
			// list; a repeated typed field then fails messageFromFields.
			name := t.Name.Local
			switch prev, dup := children[name]; {
			case !dup:
				children[name] = v
			case isPushList(prev):
				children[name] = append(prev.([]any), v)
			default:
				children[name] = []any{prev, v}
			}
		case xml.EndElement:
			if children != nil {
				return children, nil
			}
			return string(text), nil
		}
	}
}

func isPushList(v any) bool {
	_, ok := v.([]any)
	return ok
}

func parsePushJSON(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("JSON: not an object")
	}
	fields := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("JSON: object key expected")
		}
		if _, dup := fields[key]; dup {
			return nil, fmt.Errorf("JSON: duplicate field %q", truncateForDetail(key))
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("JSON: %w", err)
		}
		fields[key] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, errors.New("JSON: unterminated object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("JSON: data after the object")
	}
	return fields, nil
}

// messageFromFields maps a push's fields onto webhooks.Message. Unknown
// message types and events are fine; ToUserName, FromUserName, CreateTime
// and MsgType are required, and numeric fields must be numbers.
func messageFromFields(fields map[string]any) (*webhooks.Message, error) {
	m := &webhooks.Message{Fields: fields}
	var err error
	str := func(key string) string {
		if err != nil {
			return ""
		}
		v, ok := fields[key]
		if !ok {
			return ""
		}
		switch x := v.(type) {
		case string:
			return x
		case json.Number:
			return x.String()
		}
		err = fmt.Errorf("field %s is not a string", key)
		return ""
	}
	m.ToUserName, m.FromUserName, m.MsgType, m.Event = str("ToUserName"), str("FromUserName"), str("MsgType"), str("Event")
	m.Content, m.PicURL, m.MediaID = str("Content"), str("PicUrl"), str("MediaId")
	m.Title, m.AppID, m.PagePath = str("Title"), str("AppId"), str("PagePath")
	m.ThumbURL, m.ThumbMediaID, m.SessionFrom = str("ThumbUrl"), str("ThumbMediaId"), str("SessionFrom")
	createTime, msgID := str("CreateTime"), str("MsgId")
	if err != nil {
		return nil, err
	}
	if m.ToUserName == "" || m.FromUserName == "" || m.MsgType == "" || createTime == "" {
		return nil, errors.New("ToUserName, FromUserName, CreateTime and MsgType are required")
	}
	if m.CreateTime, err = strconv.ParseInt(createTime, 10, 64); err != nil {
		return nil, errors.New("CreateTime is not an integer")
	}
	if msgID != "" {
		if m.MsgID, err = strconv.ParseInt(msgID, 10, 64); err != nil {
			return nil, errors.New("MsgId is not an integer")
		}
	}
	if m.MsgType == "event" && m.Event == "" {
		return nil, errors.New("event push without Event")
	}
	return m, nil
}
