// Command testreport reads `go test -json` on stdin and prints a short
// report: each package's verdict, the full output of failing tests (their own
// messages included), every skipped test with its reason, which integration
// tests ran against real services, and a closing "N passed, N failed, N
// skipped" line. It exits 1 if anything failed.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
)

func main() {
	r := newReport(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		r.line(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		// A line longer than the buffer: say so rather than losing the rest.
		fmt.Fprintf(os.Stdout, "testreport: reading go test output: %v\n", err)
		r.broken = true
		_, _ = io.Copy(os.Stdout, os.Stdin)
	}
	if !r.finish() {
		os.Exit(1)
	}
}
