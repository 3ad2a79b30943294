package auth_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(emuChildEnv) == "1" {
		os.Exit(runEmulatorChild())
	}
	testenv.Main(m)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
