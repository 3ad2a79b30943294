// Command testreport reads `go test -json` on stdin and prints a short
// report: each package's verdict, the full output of failing tests, every
// skipped test with its reason, which integration tests ran against real
// services, and a closing "N passed, N failed, N skipped" line. It exits 1 if
// anything failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

// IntegrationMarker starts the log line tests write when they use a real service.
const IntegrationMarker = "integration: "

func main() {
	output := map[string][]string{}
	var passed, failed, skipped int
	var failures, skips []string
	integration := map[string]map[string]bool{} // service -> tests
	pkgFailed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			fmt.Println(string(line)) // build errors and the like
			continue
		}
		key := ev.Package + " " + ev.Test
		switch ev.Action {
		case "output":
			output[key] = append(output[key], ev.Output)
			if ev.Test != "" {
				if i := strings.Index(ev.Output, IntegrationMarker); i >= 0 {
					svc := strings.TrimSpace(ev.Output[i+len(IntegrationMarker):])
					if integration[svc] == nil {
						integration[svc] = map[string]bool{}
					}
					integration[svc][ev.Package+"."+topTest(ev.Test)] = true
				}
			}
		case "pass":
			if ev.Test == "" {
				fmt.Printf("ok    %s (%.1fs)\n", ev.Package, ev.Elapsed)
			} else if !strings.Contains(ev.Test, "/") {
				passed++
			}
			delete(output, key)
		case "skip":
			if ev.Test == "" {
				fmt.Printf("?     %s [no test files]\n", ev.Package)
				break
			}
			skipped++
			reason := lastMeaningful(output[key])
			skips = append(skips, fmt.Sprintf("SKIP  %s.%s: %s", ev.Package, ev.Test, reason))
			delete(output, key)
		case "fail":
			if ev.Test == "" {
				fmt.Printf("FAIL  %s (%.1fs)\n", ev.Package, ev.Elapsed)
				pkgFailed = true
				if out := output[key]; len(out) > 0 {
					failures = append(failures, fmt.Sprintf("--- package %s output:\n%s", ev.Package, strings.Join(out, "")))
				}
				break
			}
			if !strings.Contains(ev.Test, "/") {
				failed++
			}
			failures = append(failures, fmt.Sprintf("--- FAIL %s.%s\n%s", ev.Package, ev.Test, strings.Join(output[key], "")))
			delete(output, key)
		}
	}
	if len(failures) > 0 {
		fmt.Println("\nFailures:")
		for _, f := range failures {
			fmt.Print(f)
			if !strings.HasSuffix(f, "\n") {
				fmt.Println()
			}
		}
	}
	if len(skips) > 0 {
		fmt.Println("\nSkipped:")
		for _, s := range skips {
			fmt.Println(s)
		}
	}
	if len(integration) > 0 {
		fmt.Println("\nIntegration tests against real services:")
		svcs := make([]string, 0, len(integration))
		for s := range integration {
			svcs = append(svcs, s)
		}
		sort.Strings(svcs)
		for _, s := range svcs {
			fmt.Printf("  %-40s %d test(s) ran\n", s, len(integration[s]))
		}
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || pkgFailed {
		os.Exit(1)
	}
}

func topTest(name string) string {
	if i := strings.Index(name, "/"); i >= 0 {
		return name[:i]
	}
	return name
}

func lastMeaningful(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "---") || strings.HasPrefix(l, "===") {
			continue
		}
		return l
	}
	return "(no reason given)"
}
