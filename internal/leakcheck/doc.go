// Package leakcheck holds the secrets test (issue 9): recognisable secrets
// seeded into every secret field must never show up in the daemon's logs,
// /metrics, API replies, /probe answers, the status page or its state files,
// whatever fails. The package has no code of its own besides the test.
package leakcheck
