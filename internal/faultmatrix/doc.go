// Package faultmatrix holds the fault matrix test (issue 9): every outside
// dependency mxprobe talks to — the homeserver (the real local Dendrite), MAS
// and the upstream OIDC provider (the MAS emulator), the Synapse metrics
// endpoint, Slack and Alertmanager — is put behind a fault-injecting proxy,
// and each kind of fault (connection refused, reset mid-body, slow headers,
// slow body, 5xx, 429 with and without retry_after_ms, malformed JSON, wrong
// content type, redirect loop, huge body) is asserted to give the right
// failure class on the right step, no panic, no goroutine left behind, the
// other subjects' runs kept, and recovery on the next run once the fault is
// gone.
//
// The package has no code of its own besides the test; it is run by `make
// test`.
package faultmatrix
