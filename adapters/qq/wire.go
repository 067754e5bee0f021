package qq

import (
	"bytes"
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// QQ wallet speaks flat XML documents, <xml><key>value</key>…</xml>, signed
// with the WeChat Pay v2 rule. This file is that wire format.

// maxXMLFields bounds the fields of one document.
const maxXMLFields = 256

// errDirective is returned for documents with a DOCTYPE, ENTITY or other
// <!…> declaration: QQ never sends one, and refusing them rules out entity
// tricks.
var errDirective = errors.New("XML declarations (<!DOCTYPE …>, <!ENTITY …>) are not accepted")

// decodeXML parses a flat QQ wallet document into its fields. It refuses
// declarations, nested or namespaced elements, duplicate keys, text outside
// the fields, content after the root and non-UTF-8 encodings.
func decodeXML(b []byte) (map[string]string, error) {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	fields := make(map[string]string)
	var (
		depth      int
		key        string
		value      strings.Builder
		rootSeen   bool
		rootClosed bool
	)
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("qq: xml: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, errDirective
		case xml.ProcInst:
			if t.Target != "xml" || rootSeen {
				return nil, fmt.Errorf("qq: xml: unexpected processing instruction %q", t.Target)
			}
		case xml.Comment:
		case xml.StartElement:
			if rootClosed {
				return nil, errors.New("qq: xml: content after the root element")
			}
			if t.Name.Space != "" {
				return nil, fmt.Errorf("qq: xml: namespaced element %s:%s", t.Name.Space, t.Name.Local)
			}
			depth++
			switch depth {
			case 1:
				if t.Name.Local != "xml" {
					return nil, fmt.Errorf("qq: xml: root element <%s>, want <xml>", t.Name.Local)
				}
				rootSeen = true
			case 2:
				key = t.Name.Local
				value.Reset()
			default:
				return nil, fmt.Errorf("qq: xml: nested element <%s>", t.Name.Local)
			}
		case xml.EndElement:
			if depth == 2 {
				if _, dup := fields[key]; dup {
					return nil, fmt.Errorf("qq: xml: duplicate field %q", key)
				}
				if len(fields) == maxXMLFields {
					return nil, fmt.Errorf("qq: xml: more than %d fields", maxXMLFields)
				}
				fields[key] = value.String()
			} else {
				rootClosed = true
			}
			depth--
		case xml.CharData:
			switch {
			case depth == 2:
				value.Write(t)
			case len(bytes.TrimSpace(t)) > 0:
				return nil, errors.New("qq: xml: text outside the fields")
			}
		}
	}
	if !rootClosed {
		return nil, errors.New("qq: xml: no complete <xml> root element")
	}
	return fields, nil
}

// encodeXML renders fields as a flat document, keys sorted. Keys are
// minigate's own constants; values are escaped.
func encodeXML(fields map[string]string) []byte {
	var b bytes.Buffer
	b.WriteString("<xml>")
	for _, k := range sortedKeys(fields) {
		b.WriteString("<" + k + ">")
		// Writes to a bytes.Buffer cannot fail.
		_ = xml.EscapeText(&b, []byte(fields[k]))
		b.WriteString("</" + k + ">")
	}
	b.WriteString("</xml>")
	return b.Bytes()
}

// sign computes the WeChat Pay v2 / QQ wallet MD5 signature: the non-empty
// fields except sign, sorted by key, joined as k=v&…, followed by
// &key=<API key>, MD5, uppercase hex.
func sign(fields map[string]string, apiKey string) string {
	h := md5.New()
	for _, k := range sortedKeys(fields) {
		if k == "sign" || fields[k] == "" {
			continue
		}
		io.WriteString(h, k+"="+fields[k]+"&")
	}
	io.WriteString(h, "key="+apiKey)
	return strings.ToUpper(hex.EncodeToString(h.Sum(nil)))
}

// signValid reports, in constant time, whether fields carry a correct sign.
func signValid(fields map[string]string, apiKey string) bool {
	got := strings.ToUpper(fields["sign"])
	if got == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(sign(fields, apiKey))) == 1
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
