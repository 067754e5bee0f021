package qq

import (
	"testing"

	"github.com/minigate/minigate/adapters"
)

func TestErrcodeReason(t *testing.T) {
	t.Parallel()
	tests := map[int]adapters.Reason{
		-1: adapters.ReasonBusy, 40029: adapters.ReasonInvalidCode, 40163: adapters.ReasonInvalidCode,
		45011: adapters.ReasonRateLimited, 40226: adapters.ReasonHighRisk, 40001: adapters.ReasonAuth,
		40013: adapters.ReasonAuth, 40125: adapters.ReasonAuth, 40014: adapters.ReasonInvalidToken,
		42001: adapters.ReasonInvalidToken, 40002: adapters.ReasonInvalidRequest,
		45009: adapters.ReasonQuotaExceeded, 12345: adapters.ReasonRejected,
	}
	for code, want := range tests {
		if got := errcodeReason(code); got != want {
			t.Errorf("errcodeReason(%d) = %s, want %s", code, got, want)
		}
	}
}
