package alipay

import (
	"context"

	"github.com/minigate/minigate/adapters"
	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/internal/config"
)

// customerServiceFeature names the feature in UnsupportedErrors.
const customerServiceFeature = "customer-service messages"

// CustomerService is an Alipay app's customer-service API: Alipay offers
// mini-programs no server API to send customer-service messages, typing or
// temporary media, so every call returns *adapters.UnsupportedError (501
// unsupported_by_platform). Messages users send still reach the inbox
// through Alipay's message notifications.
type CustomerService struct{}

var (
	_ customerservice.Platform     = CustomerService{}
	_ customerservice.Availability = CustomerService{}
)

// NewCustomerService returns app's (unsupported) customer-service API.
func NewCustomerService(*config.App, adapters.Options) CustomerService { return CustomerService{} }

func unsupported() error {
	return &adapters.UnsupportedError{Platform: Platform, Feature: customerServiceFeature}
}

// Available reports that Alipay has no customer-service API.
func (CustomerService) Available() error { return unsupported() }

// SendMessage is unsupported.
func (CustomerService) SendMessage(context.Context, customerservice.Outbound) error {
	return unsupported()
}

// SetTyping is unsupported.
func (CustomerService) SetTyping(context.Context, string, bool) error { return unsupported() }

// UploadImage is unsupported.
func (CustomerService) UploadImage(context.Context, customerservice.Image) (customerservice.Uploaded, error) {
	return customerservice.Uploaded{}, unsupported()
}

// FetchMedia is unsupported.
func (CustomerService) FetchMedia(context.Context, string) (customerservice.Media, error) {
	return customerservice.Media{}, unsupported()
}
