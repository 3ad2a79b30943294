// Package state is the self-test of TestNoPackageState: every var below but
// table is package state the check must report.
package state

import (
	"flag"
	"net/http"
	"sync"
)

// counter is mutable state.
var counter int

// mu guards nothing but is state all the same.
var mu sync.Mutex

// table is an allowlisted table, but Bump writes to it.
var table = map[string]int{"a": 1}

// client is allowlisted, but an HTTP client is no table, regexp or descriptor.
var client = http.DefaultClient

// level is allowlisted and a table, but a flag writes it.
var level = []string{"info"}

// clean is an allowlisted table nobody writes: not reported.
var clean = []string{"x", "y"}

func init() { counter = 1 }

// Bump writes the package state.
func Bump() {
	counter++
	table["a"] = 2
	flag.StringVar(&level[0], "level", "info", "")
	mu.Lock()
	defer mu.Unlock()
	_ = client
	_ = clean
	clean := []string{"a local that shadows the table: not reported"}
	clean[0] = "b"
}
