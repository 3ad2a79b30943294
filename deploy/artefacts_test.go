package deploy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// Facts of the daemon the artefacts must agree with (cmd/mxprobe's
// DefaultListenAddress and exporters/web's lifecycle routes).
const (
	daemonPort   = 9787
	healthyPath  = "/-/healthy"
	readyPath    = "/-/ready"
	metricsPath  = "/metrics"
	configInPods = "/etc/mxprobe/mxprobe.yml"
)

// dockerfile is the parsed Dockerfile: instructions with continuation lines joined.
type instruction struct{ op, args string }

func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		cur += line
		op, args, _ := strings.Cut(cur, " ")
		out = append(out, instruction{strings.ToUpper(op), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// TestDockerfileBuildsStaticBinary is half of "Done when" 5: the Dockerfile's
// own `go build` line, run here with its ARG defaults, gives a static binary
// (no ELF interpreter, no dynamic section) that runs.
func TestDockerfileBuildsStaticBinary(t *testing.T) {
	ins := readDockerfile(t)
	args := map[string]string{}
	var build string
	for _, in := range ins {
		switch in.op {
		case "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		case "RUN":
			if strings.Contains(in.args, "go build") {
				build = in.args
			}
		}
	}
	if build == "" {
		t.Fatal("no RUN ... go build in the Dockerfile")
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "-trimpath") {
		t.Fatalf("the build line must be CGO_ENABLED=0 go build -trimpath ...: %s", build)
	}
	out := regexp.MustCompile(`-o\s+(\S+)`).FindStringSubmatch(build)
	if out == nil {
		t.Fatalf("the build line names no -o output: %s", build)
	}
	bin := filepath.Join(t.TempDir(), "mxprobe")
	cmdline := strings.Replace(build, out[0], "-o "+bin, 1)
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = root
	cmd.Env = os.Environ()
	for k, v := range args {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmdline, err, o)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: not static", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("binary has a .dynamic section: not static")
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v", libs)
	}
	o, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(o), "mxprobe, version "+args["VERSION"]) {
		t.Errorf("%s version: %v\n%s", bin, err, o)
	}
}

func TestDockerfileRuntimeStage(t *testing.T) {
	ins := readDockerfile(t)
	var froms []string
	var user, expose, entry string
	for _, in := range ins {
		switch in.op {
		case "FROM":
			froms = append(froms, in.args)
		case "USER":
			user = in.args
		case "EXPOSE":
			expose = in.args
		case "ENTRYPOINT":
			entry = in.args
		case "COPY":
			if strings.HasPrefix(in.args, "--from") {
				continue
			}
			fields := strings.Fields(in.args)
			for _, src := range fields[:len(fields)-1] {
				if src == "." {
					continue
				}
				if _, err := os.Stat(filepath.Join("..", src)); err != nil {
					t.Errorf("COPY %s: %v (the build context is the repository root)", src, err)
				}
			}
		}
	}
	if len(froms) < 2 {
		t.Fatalf("not a multi-stage build: FROM %v", froms)
	}
	last := froms[len(froms)-1]
	if !strings.Contains(last, "distroless/static") && last != "scratch" {
		t.Errorf("runtime stage %q is neither distroless/static nor scratch", last)
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("USER %q: the container must not run as root", user)
	}
	if expose != "9787" {
		t.Errorf("EXPOSE %q, want %d", expose, daemonPort)
	}
	if !strings.Contains(entry, "mxprobe") {
		t.Errorf("ENTRYPOINT %q", entry)
	}
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// exists accepts a path, or its ".example" twin for files the operator
// creates from it (.env).
func exists(path string) bool {
	if _, err := os.Stat(path); err == nil {
		return true
	}
	_, err := os.Stat(path + ".example")
	return err == nil
}

func get(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

func list(v any) []any { l, _ := v.([]any); return l }

// TestComposeReferencesExistingFiles: the compose file parses, its build
// context and Dockerfile exist, every bind-mounted file exists, and mxprobe
// publishes its port.
func TestComposeReferencesExistingFiles(t *testing.T) {
	dir := "compose"
	docs := yamlDocs(t, filepath.Join(dir, "compose.yml"))
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, s := range []string{"mxprobe", "prometheus", "alertmanager", "grafana"} {
		if services[s] == nil {
			t.Errorf("no service %s", s)
		}
	}
	mx := services["mxprobe"]
	ctx, _ := get(mx, "build", "context").(string)
	df, _ := get(mx, "build", "dockerfile").(string)
	if !exists(filepath.Join(dir, ctx, df)) {
		t.Errorf("build %s / %s does not exist", ctx, df)
	}
	if ef, _ := get(mx, "env_file").(string); ef != "" && !exists(filepath.Join(dir, ef)) {
		t.Errorf("env_file %s (nor %s.example) does not exist", ef, ef)
	}
	if ports := list(get(mx, "ports")); len(ports) != 1 || ports[0] != "127.0.0.1:9787:9787" {
		t.Errorf("mxprobe ports %v, want 127.0.0.1:9787:9787", ports)
	}
	// Safe defaults: every published port on loopback only, and the API
	// token comes from a secret file.
	for name, svc := range services {
		for _, p := range list(get(svc, "ports")) {
			if ps, _ := p.(string); !strings.HasPrefix(ps, "127.0.0.1:") {
				t.Errorf("service %s publishes %v on every interface", name, p)
			}
		}
	}
	tokenMounted := false
	for _, v := range list(get(mx, "volumes")) {
		tokenMounted = tokenMounted || strings.HasSuffix(v.(string), ":/run/secrets/api-token:ro")
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "mxprobe.yml"))
	if err != nil || !tokenMounted || !strings.Contains(string(cfg), "api_token_file: /run/secrets/api-token") {
		t.Errorf("the compose example sets no API token from a secret file (mounted %v, %v)", tokenMounted, err)
	}
	mounts := 0
	for name, svc := range services {
		for _, v := range list(get(svc, "volumes")) {
			src, _, _ := strings.Cut(v.(string), ":")
			if !strings.HasPrefix(src, ".") {
				continue // a named volume
			}
			mounts++
			if !exists(filepath.Join(dir, src)) {
				t.Errorf("service %s mounts %s, which does not exist", name, src)
			}
		}
	}
	if mounts < 7 {
		t.Errorf("only %d bind mounts checked", mounts)
	}
}

// TestKubernetesManifests is the other half of "Done when" 5, without
// kubectl: the manifests parse, kustomization resources and generator files
// exist, probes hit the daemon's paths on its port, the ServiceMonitor
// scrapes the service's port, and the PrometheusRule carries the same rules
// as deploy/prometheus.
func TestKubernetesManifests(t *testing.T) {
	dir := "kubernetes"
	kust := yamlDocs(t, filepath.Join(dir, "kustomization.yaml"))[0]
	var files []string
	for _, r := range list(kust["resources"]) {
		files = append(files, r.(string))
	}
	for _, key := range []string{"configMapGenerator", "secretGenerator"} {
		for _, g := range list(kust[key]) {
			for _, f := range append(list(get(g, "files")), list(get(g, "envs"))...) {
				_, p, found := strings.Cut(f.(string), "=")
				if !found {
					p = f.(string)
				}
				if !exists(filepath.Join(dir, p)) {
					t.Errorf("%s file %s does not exist", key, p)
				}
			}
		}
	}
	kinds := map[string]map[string]any{}
	for _, f := range files {
		p := filepath.Join(dir, f)
		if _, err := os.Stat(p); err != nil {
			t.Errorf("kustomization resource %s: %v", f, err)
			continue
		}
		for _, d := range yamlDocs(t, p) {
			kind, _ := d["kind"].(string)
			if kind == "" || d["apiVersion"] == nil || get(d, "metadata", "name") == nil {
				t.Errorf("%s: a manifest without kind, apiVersion or metadata.name", f)
			}
			kinds[kind] = d
		}
	}
	sts, svc, sm := kinds["StatefulSet"], kinds["Service"], kinds["ServiceMonitor"]
	if sts == nil || svc == nil || sm == nil || kinds["PrometheusRule"] == nil {
		t.Fatalf("want a StatefulSet, Service, ServiceMonitor and PrometheusRule, have %v", reflect.ValueOf(kinds).MapKeys())
	}
	containers := list(get(sts, "spec", "template", "spec", "containers"))
	if len(containers) != 1 {
		t.Fatalf("%d containers", len(containers))
	}
	c := containers[0]
	ports := map[string]int{}
	for _, p := range list(get(c, "ports")) {
		ports[get(p, "name").(string)] = get(p, "containerPort").(int)
	}
	if ports["http-metrics"] != daemonPort {
		t.Errorf("container ports %v, want http-metrics %d", ports, daemonPort)
	}
	for probe, path := range map[string]string{"livenessProbe": healthyPath, "readinessProbe": readyPath} {
		p := get(c, probe, "httpGet", "path")
		port := get(c, probe, "httpGet", "port")
		if p != path {
			t.Errorf("%s path %v, want %s", probe, p, path)
		}
		if _, named := ports[port.(string)]; !named {
			t.Errorf("%s port %v is not a container port", probe, port)
		}
	}
	args := list(get(c, "args"))
	var shardCount string
	sawConfig := false
	for _, a := range args {
		s := a.(string)
		if v, ok := strings.CutPrefix(s, "--shard.count="); ok {
			shardCount = v
		}
		if s == "--config.file="+configInPods {
			sawConfig = true
		}
		if v, ok := strings.CutPrefix(s, "--web.listen-address="); ok && v != ":9787" {
			t.Errorf("listen address %s", v)
		}
	}
	if !sawConfig {
		t.Errorf("args %v do not read %s", args, configInPods)
	}
	if replicas := get(sts, "spec", "replicas"); shardCount == "" || shardCount != strings.TrimSpace(fmtAny(replicas)) {
		t.Errorf("--shard.count=%s but replicas %v: they must agree", shardCount, replicas)
	}
	// The config volume mounts the generated ConfigMap where the args read it.
	mountPath := ""
	for _, m := range list(get(c, "volumeMounts")) {
		if get(m, "name") == "config" {
			mountPath = get(m, "mountPath").(string)
		}
	}
	if filepath.Join(mountPath, "mxprobe.yml") != configInPods {
		t.Errorf("config mounted at %q", mountPath)
	}
	cmName := ""
	for _, v := range list(get(sts, "spec", "template", "spec", "volumes")) {
		if get(v, "name") == "config" {
			cmName, _ = get(v, "configMap", "name").(string)
		}
	}
	if cmName != get(list(kust["configMapGenerator"])[0], "name") {
		t.Errorf("config volume uses ConfigMap %q, not the generated one", cmName)
	}
	secretName := get(list(get(c, "envFrom"))[0], "secretRef", "name")
	if secretName != get(list(kust["secretGenerator"])[0], "name") {
		t.Errorf("envFrom secret %v is not the generated one", secretName)
	}
	if get(sts, "spec", "serviceName") != get(svc, "metadata", "name") {
		t.Error("StatefulSet serviceName is not the Service")
	}
	if typ := get(svc, "spec", "type"); typ != nil && typ != "ClusterIP" {
		t.Errorf("the Service is of type %v: keep it cluster-internal (ClusterIP)", typ)
	}
	kcfg, err := os.ReadFile(filepath.Join(dir, "mxprobe.yml"))
	if err != nil || !strings.Contains(string(kcfg), "api_token_file: /run/secrets/mxprobe/api-token") {
		t.Errorf("the Kubernetes config sets no API token from the mounted secret: %v", err)
	}
	if get(svc, "metadata", "name") != "mxprobe" {
		t.Error("the Service must be named mxprobe: it becomes job=\"mxprobe\", which the rules select")
	}
	svcPort := list(get(svc, "spec", "ports"))[0]
	if get(svcPort, "port") != daemonPort || get(svcPort, "targetPort") != "http-metrics" {
		t.Errorf("service port %v", svcPort)
	}
	ep := list(get(sm, "spec", "endpoints"))[0]
	if get(ep, "port") != get(svcPort, "name") || get(ep, "path") != metricsPath {
		t.Errorf("ServiceMonitor endpoint %v does not scrape the service's port at %s", ep, metricsPath)
	}
	sel, _ := get(sm, "spec", "selector", "matchLabels").(map[string]any)
	labels, _ := get(svc, "metadata", "labels").(map[string]any)
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%v, the Service has %v", k, v, labels[k])
		}
	}
	podLabels, _ := get(sts, "spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range get(svc, "spec", "selector").(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("Service selects %s=%v, the pods have %v", k, v, podLabels[k])
		}
	}
	// The operator's rules are the tested rules.
	want := yamlDocs(t, filepath.Join("prometheus", "mxprobe.rules.yml"))[0]["groups"]
	if got := get(kinds["PrometheusRule"], "spec", "groups"); !reflect.DeepEqual(got, want) {
		t.Error("kubernetes/prometheusrule.yaml differs from prometheus/mxprobe.rules.yml: regenerate it")
	}
}

func fmtAny(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

// TestExampleConfigsAreValid runs `mxprobe check-config` on the configs the
// compose file and the Kubernetes ConfigMap ship, with the environment they
// get there (a sample TENANTS_B64).
func TestExampleConfigsAreValid(t *testing.T) {
	bin := testenv.BuildMxprobe(t)
	tenants := base64.StdEncoding.EncodeToString([]byte(`[{"id":"acme","name":"ACME","botUser":{"email":"bot-acme@example.org","slug":"openmeet-bot-acme","password":"x"}}]`))
	// The secret files the examples name are mounted under /run/secrets
	// there; here the token is generated as the deploy guide says
	// (openssl rand -hex 32): the shipped placeholders are refused
	// (TestShippedTokenPlaceholdersRefused).
	secrets := t.TempDir()
	if err := os.WriteFile(filepath.Join(secrets, "api-token"), []byte(randomHexToken(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Compose gets its environment from .env, made from .env.example: its
	// tenants are the ones the example scrape configuration probes.
	composeEnv := envFile(t, filepath.Join("compose", ".env.example"))
	for _, cfg := range []string{filepath.Join("compose", "mxprobe.yml"), filepath.Join("kubernetes", "mxprobe.yml")} {
		raw, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		local := strings.NewReplacer("/run/secrets/mxprobe/", secrets+"/", "/run/secrets/", secrets+"/").Replace(string(raw))
		if local == string(raw) {
			t.Errorf("%s names no secret file under /run/secrets", cfg)
		}
		cfg := filepath.Join(t.TempDir(), filepath.Base(filepath.Dir(cfg))+".yml")
		if err := os.WriteFile(cfg, []byte(local), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "check-config", "--config.file", cfg)
		cmd.Env = append(os.Environ(), "TENANTS_B64="+tenants, "MATRIX_HOMESERVER_URL=https://matrix.example.org",
			"MATRIX_SERVER_NAME=example.org", "MAS_PUBLIC_URL=https://mas.example.org", "BACKEND_DOMAIN=https://api.example.org")
		if strings.HasPrefix(filepath.Base(cfg), "compose") {
			for k, v := range composeEnv {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", cfg, err, out)
		}
	}
}

// envFile reads a compose env file (KEY=VALUE lines, # comments).
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: not KEY=VALUE: %q", path, i+1, line)
		}
		env[k] = v
	}
	return env
}

// TestComposeComesUpGreen: what `docker compose up` needs to come up with
// every target up and every container healthy. mxprobe's healthcheck runs
// the image's own binary in exec form (the distroless image has no shell)
// and its arguments parse; the tenants of .env.example are exactly the
// targets of the example /probe job, whose module is a configured probe;
// Prometheus and Alertmanager keep their data on named volumes.
func TestComposeComesUpGreen(t *testing.T) {
	services, _ := yamlDocs(t, filepath.Join("compose", "compose.yml"))[0]["services"].(map[string]any)
	var entry []string
	for _, in := range readDockerfile(t) {
		if in.op == "ENTRYPOINT" {
			if err := json.Unmarshal([]byte(in.args), &entry); err != nil || len(entry) != 1 {
				t.Fatalf("ENTRYPOINT %s: want the exec form with the binary alone", in.args)
			}
		}
	}
	var test []string
	for _, v := range list(get(services["mxprobe"], "healthcheck", "test")) {
		test = append(test, v.(string))
	}
	if len(test) < 3 || test[0] != "CMD" || test[1] != entry[0] || test[2] != "healthcheck" {
		t.Fatalf("mxprobe healthcheck %v: want [CMD %s healthcheck ...] (exec form: no shell in the image)", test, entry)
	}
	// The arguments parse: against a port nobody listens on, the check
	// says unhealthy (1), not a usage error (2).
	bin := testenv.BuildMxprobe(t)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, test[2:]...), "--url", fmt.Sprintf("http://127.0.0.1:%d/-/healthy", port))
	out, err := exec.Command(bin, args...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "connection refused") {
		t.Errorf("mxprobe %v: %v\n%s", args, err, out)
	}
	// Without --url the check asks the default listen address, which the
	// image's CMD must serve on.
	if !slices.ContainsFunc(test, func(a string) bool {
		return strings.HasPrefix(a, "--url") || strings.HasPrefix(a, "--web.listen-address")
	}) {
		for _, in := range readDockerfile(t) {
			if in.op == "CMD" && !strings.Contains(in.args, fmt.Sprintf(`"--web.listen-address=:%d"`, daemonPort)) {
				t.Errorf("CMD %s does not listen on :%d, where the healthcheck asks", in.args, daemonPort)
			}
		}
	}

	// The example tenants are the /probe job's targets.
	raw, err := base64.StdEncoding.DecodeString(envFile(t, filepath.Join("compose", ".env.example"))["TENANTS_B64"])
	if err != nil {
		t.Fatalf(".env.example TENANTS_B64: %v", err)
	}
	var tenants []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &tenants); err != nil {
		t.Fatalf(".env.example TENANTS_B64: %v", err)
	}
	var ids []string
	for _, tn := range tenants {
		ids = append(ids, tn.ID)
	}
	var targets, modules []string
	for _, job := range list(yamlDocs(t, filepath.Join("prometheus", "prometheus.yml"))[0]["scrape_configs"]) {
		if get(job, "metrics_path") != "/probe" {
			continue
		}
		for _, sc := range list(get(job, "static_configs")) {
			for _, tg := range list(get(sc, "targets")) {
				targets = append(targets, tg.(string))
			}
		}
		for _, m := range list(get(job, "params", "module")) {
			modules = append(modules, m.(string))
		}
	}
	slices.Sort(ids)
	slices.Sort(targets)
	if len(ids) == 0 || !slices.Equal(ids, targets) {
		t.Errorf(".env.example's tenants %v, the /probe job's targets %v: they must agree, or targets are down", ids, targets)
	}
	var probeNames []string
	for _, p := range list(yamlDocs(t, filepath.Join("compose", "mxprobe.yml"))[0]["probes"]) {
		probeNames = append(probeNames, get(p, "name").(string))
	}
	for _, m := range modules {
		if !slices.Contains(probeNames, m) {
			t.Errorf("the /probe job asks for module %s; compose's mxprobe.yml has probes %v", m, probeNames)
		}
	}

	// Data volumes where Prometheus and Alertmanager keep their state.
	for name, flag := range map[string]string{"prometheus": "--storage.tsdb.path=", "alertmanager": "--storage.path="} {
		svc := services[name]
		var path string
		for _, a := range list(get(svc, "command")) {
			if v, ok := strings.CutPrefix(a.(string), flag); ok {
				path = v
			}
		}
		if path == "" {
			t.Errorf("%s: no %s in its command", name, flag)
			continue
		}
		kept := false
		for _, v := range list(get(svc, "volumes")) {
			src, dst, _ := strings.Cut(v.(string), ":")
			kept = kept || (!strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") && strings.TrimSuffix(dst, ":rw") == path)
		}
		if !kept {
			t.Errorf("%s keeps its data (%s) on no named volume: it is lost when the container is recreated", name, path)
		}
	}
}

func randomHexToken(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestShippedTokenPlaceholdersRefused: every API token file the deploy
// directories ship (as is, or as an .example to copy) is refused by
// check-config with its file named and its text never echoed, so that
// deploying without generating a token fails instead of handing the API to
// everyone who has read the repository.
func TestShippedTokenPlaceholdersRefused(t *testing.T) {
	var shipped []string
	for _, pat := range []string{"kubernetes/*token*", "compose/*token*"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		shipped = append(shipped, m...)
	}
	if len(shipped) < 2 {
		t.Fatalf("token files shipped: %v; expected compose's and kubernetes'", shipped)
	}
	bin := testenv.BuildMxprobe(t)
	for _, f := range shipped {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(t.TempDir(), "mxprobe.yml")
		if err := os.WriteFile(cfg, []byte("web:\n  api_token_file: "+abs+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "check-config", "--config.file", cfg).CombinedOutput()
		if err == nil {
			t.Errorf("%s: check-config accepted the shipped token:\n%s", f, out)
			continue
		}
		if !strings.Contains(string(out), "web.api_token_file: the token in "+abs+" ") {
			t.Errorf("%s: the file is not named:\n%s", f, out)
		}
		if v := strings.TrimSpace(string(text)); v != "" && strings.Contains(string(out), v) {
			t.Errorf("%s: the token's text is echoed:\n%s", f, out)
		}
	}
}
