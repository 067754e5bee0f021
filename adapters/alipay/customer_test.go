package alipay_test

import (
	"context"
	"errors"
	"testing"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/alipay"
	customerservice "github.com/minigate/minigate/customer-service"
)

func TestCustomerServiceIsUnsupported(t *testing.T) {
	t.Parallel()
	cs := alipay.NewCustomerService(nil, adapters.Options{})
	ctx := context.Background()
	for name, err := range map[string]error{
		"available": cs.Available(),
		"send":      cs.SendMessage(ctx, customerservice.Outbound{To: "u", Type: "text", Content: "x"}),
		"typing":    cs.SetTyping(ctx, "u", true),
		"upload":    func() error { _, err := cs.UploadImage(ctx, customerservice.Image{Data: []byte{1}}); return err }(),
		"fetch":     func() error { _, err := cs.FetchMedia(ctx, "m"); return err }(),
	} {
		var ue *adapters.UnsupportedError
		if !errors.As(err, &ue) || ue.Platform != alipay.Platform {
			t.Fatalf("%s: %v, want an UnsupportedError", name, err)
		}
		if ae := ue.AppError(); ae.Kind.Status() != 501 || ae.Code != "unsupported_by_platform" {
			t.Fatalf("%s maps to %d %s", name, ae.Kind.Status(), ae.Code)
		}
	}
}
