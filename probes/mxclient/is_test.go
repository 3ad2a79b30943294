package mxclient_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Matrix errors are matched by errcode with errors.Is semantics, whether the
// RespError is wrapped directly or held by an HTTPError next to a wrapped
// error (which HTTPError.Unwrap prefers).
func TestIsMatchesErrcodes(t *testing.T) {
	resp := &http.Response{StatusCode: http.StatusUnauthorized}
	unknown := mautrix.RespError{ErrCode: "M_UNKNOWN_TOKEN", Err: "Invalid access token passed.", StatusCode: 401}
	for name, err := range map[string]error{
		"resp error":           fmt.Errorf("whoami: %w", unknown),
		"http error":           mautrix.HTTPError{Response: resp, RespError: &unknown},
		"http error + wrapped": fmt.Errorf("sync: %w", mautrix.HTTPError{Response: resp, RespError: &unknown, WrappedError: errors.New("decode")}),
	} {
		if !mxclient.Is(err, mautrix.MUnknownToken) || !mxclient.IsUnknownToken(err) {
			t.Errorf("%s: not M_UNKNOWN_TOKEN", name)
		}
		if mxclient.Is(err, mautrix.MLimitExceeded) || mxclient.Is(err, mautrix.MForbidden) {
			t.Errorf("%s: matches another errcode", name)
		}
	}
	if mxclient.Is(errors.New("M_UNKNOWN_TOKEN"), mautrix.MUnknownToken) || mxclient.Is(nil, mautrix.MUnknownToken) {
		t.Error("a plain error or nil matched")
	}
}
