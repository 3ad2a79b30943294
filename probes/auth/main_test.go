package auth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(emuChildEnv) == "1" {
		os.Exit(runEmulatorChild())
	}
	testenv.Main(m)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// doJSON sends a client-API request to base with an optional token and
// returns the body of a 2xx answer; other answers are errors carrying the
// status and body.
func doJSON(ctx context.Context, base, method, path, token, body string) ([]byte, error) {
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return b, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
	}
	return b, nil
}
