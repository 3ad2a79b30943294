//go:build !mxprobe_testhooks

package main

import (
	"testing"

	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TestNoCrashHookInProductionBuild: without the tag mxprobe_testhooks (the
// production build, and this test's), MXPROBE_TEST_CRASH_AT does nothing:
// no hook is built, and round trips get none.
func TestNoCrashHookInProductionBuild(t *testing.T) {
	getenv := func(k string) string {
		if k == "MXPROBE_TEST_CRASH_AT" {
			return "journal"
		}
		return ""
	}
	if crashHook(getenv) != nil {
		t.Fatal("a crash hook in a production build")
	}
	st := newStores(nil, getenv)
	if _, err := probetype.Need[matrix.CrashHook](probetype.Inputs{Name: "roundtrip", Deps: st.deps}); err == nil {
		t.Fatal("the stores provide a crash hook")
	}
}
