package federation

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
)

// startFederatingDendrites starts two Dendrites federating over TLS on
// loopback (server names 127.0.0.1:<https port>), their certificates from
// the test CA.
func startFederatingDendrites(t *testing.T) (ca *testenv.TestCA, local, remote *testenv.Dendrite) {
	t.Helper()
	ca = testenv.NewTestCA(t)
	leaf := ca.Issue(t, time.Now().Add(90*24*time.Hour), "127.0.0.1")
	fed := &testenv.DendriteFederation{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}
	local = testenv.NewDendrite(t, testenv.DendriteOptions{Federation: fed})
	remote = testenv.NewDendrite(t, testenv.DendriteOptions{Federation: fed})
	return ca, local, remote
}

// TestAgainstFederatingDendrites: the probe succeeds for both server
// names of two real federating Dendrites (their real keys and
// signatures); with the remote one stopped the run fails as unreachable at
// connect, and recovers when it is back.
func TestAgainstFederatingDendrites(t *testing.T) {
	ca, local, remote := startFederatingDendrites(t)
	p := newTestProbe(t, "", ca.CAFile, 0, local.ServerName, remote.ServerName)
	want := []string{StepConnect, StepTLS, StepVersion, StepKeys, StepSignature, StepKeyValidity}
	check := func(r probes.Result) {
		t.Helper()
		if r.Outcome != probes.OutcomeSuccess {
			t.Fatalf("run: %s", describe(r))
		}
		if got := stepNames(r); !slices.Equal(got, append(slices.Clone(want), want...)) {
			t.Errorf("steps %v", got)
		}
		for _, name := range []string{local.ServerName, remote.ServerName} {
			if r.Signals[SignalUp+":"+name] != 1 {
				t.Errorf("%s not up: %v", name, r.Signals)
			}
			// Dendrite's keys are valid for about a week.
			if v := r.Signals[SignalKeyValidUntil+":"+name]; v < float64(time.Now().Add(24*time.Hour).Unix()) {
				t.Errorf("%s: keys valid until %v", name, v)
			}
			for _, s := range want {
				if d, ok := r.Signals[SignalStepPrefix+s+":"+name]; !ok || d <= 0 {
					t.Errorf("%s: step %s not timed (%v)", name, s, d)
				}
			}
		}
	}
	check(runChecked(t, p))

	remote.Pause()
	r := runChecked(t, p)
	if r.Outcome != probes.OutcomeFailure || r.Class != probes.ClassUnreachable || r.FailedStep != StepConnect {
		t.Fatalf("remote stopped: %s", describe(r))
	}
	if r.Signals[SignalUp+":"+local.ServerName] != 1 || r.Signals[SignalUp+":"+remote.ServerName] != 0 {
		t.Errorf("up signals with the remote stopped: %v", r.Signals)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := remote.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	check(runChecked(t, p))
}
