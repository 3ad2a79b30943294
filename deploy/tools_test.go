package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tool returns the path of a Debian-packaged tool, failing (not skipping)
// the test when it is missing: `.ci/run` installs it.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (.ci/run does)", name, pkg)
	}
	return p
}

func runTool(t *testing.T, dir, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	out, err := runTool(t, "prometheus", promtool, "check", "rules", "mxprobe.rules.yml")
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(out))
}

func TestPromtoolTestRules(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	out, err := runTool(t, "prometheus", promtool, "test", "rules", "mxprobe.rules.test.yml")
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules did not say SUCCESS:\n%s", out)
	}
}

// TestPromtoolTestRulesCatchesBrokenRule proves the rule tests can fail: the
// same tests against a rule file whose 5xx threshold was loosened must fail.
func TestPromtoolTestRulesCatchesBrokenRule(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	rules, err := os.ReadFile(filepath.Join("prometheus", "mxprobe.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("prometheus", "mxprobe.rules.test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// A loosened threshold, and a sum over the two replicas instead of a max
	// (the double counting of a global probe), must both fail the tests.
	for _, c := range []struct{ orig, broken string }{
		{`servlet="all"}) > 0.05`, `servlet="all"}) > 0.5`},
		{`max by (probe) (mxprobe_synapse_http_5xx_ratio{job="mxprobe",servlet="all"}) > 0.05`,
			`sum by (probe) (mxprobe_synapse_http_5xx_ratio{job="mxprobe",servlet="all"}) > 0.05`},
	} {
		if !strings.Contains(string(rules), c.orig) {
			t.Fatalf("rule file no longer contains %q; update this test", c.orig)
		}
		broken := strings.Replace(string(rules), c.orig, c.broken, 1)
		dir := t.TempDir()
		for name, data := range map[string]string{"mxprobe.rules.yml": broken, "mxprobe.rules.test.yml": string(tests)} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out, err := runTool(t, dir, promtool, "test", "rules", "mxprobe.rules.test.yml")
		if err == nil {
			t.Fatalf("promtool test rules passed on a broken rule (%s):\n%s", c.broken, out)
		}
		if !strings.Contains(out, "SynapseHigh5xxRatio") {
			t.Fatalf("failure does not name the broken alert:\n%s", out)
		}
	}
}

func TestPromtoolCheckConfig(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	// promtool checks that the token file exists: the compose file mounts
	// it at tokenInContainer; here a copy of the config points at a
	// stand-in next to it.
	const tokenInContainer = "/etc/prometheus/secrets/mxprobe-api-token"
	raw, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), tokenInContainer) {
		t.Fatalf("prometheus.yml no longer reads mxprobe's API token from %s", tokenInContainer)
	}
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.Join("prometheus", "mxprobe.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "mxprobe-api-token")
	for name, content := range map[string][]byte{
		"mxprobe.rules.yml": rules,
		"mxprobe-api-token": []byte("stand-in-token-0123456789\n"),
		"prometheus.yml":    []byte(strings.ReplaceAll(string(raw), tokenInContainer, tok)),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runTool(t, dir, promtool, "check", "config", "prometheus.yml")
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}

func TestAmtoolCheckConfig(t *testing.T) {
	amtool := tool(t, "amtool", "prometheus-alertmanager")
	out, err := runTool(t, "alertmanager", amtool, "check-config", "alertmanager.yml")
	if err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("amtool did not say SUCCESS:\n%s", out)
	}
}
