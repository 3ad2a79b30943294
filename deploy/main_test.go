package deploy

import (
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
