package auth_test

import (
	"encoding/json"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(emuChildEnv) == "1" {
		os.Exit(runEmulatorChild())
	}
	code := m.Run()
	testenv.StopShared()
	if code == 0 {
		if err := goleak.Find(testenv.LeakOptions()...); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
