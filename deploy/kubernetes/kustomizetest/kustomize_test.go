// Package kustomizetest builds deploy/kubernetes with the kustomize Go API,
// as `kubectl apply -k` does, and decodes every object it produces strictly
// into the upstream Go types (Kubernetes' k8s.io/api and the Prometheus
// operator's monitoring/v1): a misspelt or misplaced field fails here, not
// at apply time or, worse, silently. It is a module of its own so that
// kustomize and the Kubernetes types stay out of the daemon's module; `make
// test` runs it.
package kustomizetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizationDir is deploy/kubernetes, the parent of this module.
const kustomizationDir = ".."

// operatorCopy copies the kustomization into dir as an operator prepares
// it: every X.example is also written as X (the secret files are
// git-ignored and filled in by hand). Real secret files lying next to the
// examples are never read.
func operatorCopy(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(kustomizationDir)
	if err != nil {
		t.Fatal(err)
	}
	examples := map[string]bool{}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".example"); ok {
			examples[name] = true
		}
	}
	if len(examples) < 3 {
		t.Fatalf("only %d .example files in deploy/kubernetes", len(examples))
	}
	for _, e := range entries {
		if e.IsDir() || examples[e.Name()] {
			continue
		}
		b, err := os.ReadFile(filepath.Join(kustomizationDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		names := []string{e.Name()}
		if name, ok := strings.CutSuffix(e.Name(), ".example"); ok {
			names = append(names, name)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// build runs kustomize (krusty, the library `kubectl kustomize` embeds) on dir.
func build(t *testing.T, dir string) resmap.ResMap {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	return m
}

// strictDecode decodes an object's JSON into v, refusing any field v's type
// does not have.
func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// objects holds the typed objects of a build.
type objects struct {
	serviceAccounts []corev1.ServiceAccount
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	services        []corev1.Service
	statefulSets    []appsv1.StatefulSet
	pdbs            []policyv1.PodDisruptionBudget
	serviceMonitors []monitoringv1.ServiceMonitor
	rules           []monitoringv1.PrometheusRule
}

// decodeAll decodes every object strictly into its type; a kind without a
// type here is an error (the test must learn about it).
func decodeAll(t *testing.T, m resmap.ResMap) objects {
	t.Helper()
	var o objects
	for _, r := range m.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		id := r.GetKind() + "/" + r.GetName()
		var derr error
		switch r.GetKind() {
		case "ServiceAccount":
			var v corev1.ServiceAccount
			derr = strictDecode(b, &v)
			o.serviceAccounts = append(o.serviceAccounts, v)
		case "ConfigMap":
			var v corev1.ConfigMap
			derr = strictDecode(b, &v)
			o.configMaps = append(o.configMaps, v)
		case "Secret":
			var v corev1.Secret
			derr = strictDecode(b, &v)
			o.secrets = append(o.secrets, v)
		case "Service":
			var v corev1.Service
			derr = strictDecode(b, &v)
			o.services = append(o.services, v)
		case "StatefulSet":
			var v appsv1.StatefulSet
			derr = strictDecode(b, &v)
			o.statefulSets = append(o.statefulSets, v)
		case "PodDisruptionBudget":
			var v policyv1.PodDisruptionBudget
			derr = strictDecode(b, &v)
			o.pdbs = append(o.pdbs, v)
		case "ServiceMonitor":
			var v monitoringv1.ServiceMonitor
			derr = strictDecode(b, &v)
			o.serviceMonitors = append(o.serviceMonitors, v)
		case "PrometheusRule":
			var v monitoringv1.PrometheusRule
			derr = strictDecode(b, &v)
			o.rules = append(o.rules, v)
		default:
			t.Errorf("%s: no upstream type to check it against in this test", id)
			continue
		}
		if derr != nil {
			t.Errorf("%s does not decode strictly into its upstream type: %v", id, derr)
		}
	}
	return o
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKustomizationBuildsStrictly is the kustomization test of issue 25's
// item 1: the kustomization builds, every object decodes strictly into its
// upstream type, and the build is what a kube-prometheus-stack user
// deploys: the ServiceMonitor and PrometheusRule carry the release label
// its Prometheus selects them by, the image is a registry's at a fixed tag,
// a PodDisruptionBudget covers the pods, and every generated ConfigMap and
// Secret the pods use exists under its generated name.
func TestKustomizationBuildsStrictly(t *testing.T) {
	dir := t.TempDir()
	operatorCopy(t, dir)
	o := decodeAll(t, build(t, dir))

	if len(o.statefulSets) != 1 || len(o.services) != 1 || len(o.serviceMonitors) != 1 || len(o.rules) != 1 ||
		len(o.pdbs) != 1 || len(o.serviceAccounts) != 1 || len(o.configMaps) != 1 || len(o.secrets) != 2 {
		t.Fatalf("objects: %d StatefulSet, %d Service, %d ServiceMonitor, %d PrometheusRule, %d PodDisruptionBudget, %d ServiceAccount, %d ConfigMap, %d Secret",
			len(o.statefulSets), len(o.services), len(o.serviceMonitors), len(o.rules), len(o.pdbs), len(o.serviceAccounts), len(o.configMaps), len(o.secrets))
	}
	sts, svc, sm, pr, pdb := o.statefulSets[0], o.services[0], o.serviceMonitors[0], o.rules[0], o.pdbs[0]

	// kube-prometheus-stack: release=<Helm release> on both.
	release := sm.Labels["release"]
	if release == "" || pr.Labels["release"] != release {
		t.Errorf("release label: ServiceMonitor %q, PrometheusRule %q; kube-prometheus-stack selects both by it", release, pr.Labels["release"])
	}
	for _, obj := range []struct{ kind, ns string }{{"StatefulSet", sts.Namespace}, {"Service", svc.Namespace},
		{"ServiceMonitor", sm.Namespace}, {"PrometheusRule", pr.Namespace}, {"PodDisruptionBudget", pdb.Namespace}} {
		if obj.ns == "" {
			t.Errorf("%s has no namespace", obj.kind)
		}
	}

	// The image: a registry, a fixed tag or digest, no pull on every start.
	c := sts.Spec.Template.Spec.Containers[0]
	name, tag, _ := strings.Cut(c.Image, ":")
	first, _, hasPath := strings.Cut(name, "/")
	if !hasPath || !strings.ContainsAny(first, ".:") && first != "localhost" {
		t.Errorf("image %q names no registry", c.Image)
	}
	if (tag == "" || tag == "latest") && !strings.Contains(c.Image, "@sha256:") {
		t.Errorf("image %q has no fixed tag or digest", c.Image)
	}
	if c.ImagePullPolicy == corev1.PullAlways {
		t.Errorf("imagePullPolicy %s: a fixed tag needs no pull on every start", c.ImagePullPolicy)
	}

	// The PodDisruptionBudget covers the pods and lets a drain proceed.
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods (%v)", pdb.Spec.Selector, sts.Spec.Template.Labels)
	}
	replicas := int32(1)
	if sts.Spec.Replicas != nil {
		replicas = *sts.Spec.Replicas
	}
	switch {
	case pdb.Spec.MaxUnavailable != nil:
		if v := pdb.Spec.MaxUnavailable.IntValue(); v < 1 || int32(v) >= replicas {
			t.Errorf("PodDisruptionBudget maxUnavailable %v with %d replicas", pdb.Spec.MaxUnavailable, replicas)
		}
	case pdb.Spec.MinAvailable != nil:
		if v := pdb.Spec.MinAvailable.IntValue(); int32(v) >= replicas {
			t.Errorf("PodDisruptionBudget minAvailable %v with %d replicas blocks every drain", pdb.Spec.MinAvailable, replicas)
		}
	default:
		t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}

	// The ServiceMonitor selects the Service and scrapes its named port.
	if !selects(sm.Spec.Selector.MatchLabels, svc.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select the Service (%v)", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	ports := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = true
	}
	for _, ep := range sm.Spec.Endpoints {
		if !ports[ep.Port] {
			t.Errorf("ServiceMonitor endpoint port %q is not a port of the Service", ep.Port)
		}
	}
	if !selects(svc.Spec.Selector, sts.Spec.Template.Labels) {
		t.Errorf("Service selector %v does not select the pods", svc.Spec.Selector)
	}

	// Generated names (with their hash suffix) are what the pods use.
	have := map[string]bool{}
	for _, cm := range o.configMaps {
		have["ConfigMap/"+cm.Name] = true
	}
	for _, s := range o.secrets {
		have["Secret/"+s.Name] = true
	}
	var used []string
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			used = append(used, "ConfigMap/"+v.ConfigMap.Name)
		}
		if v.Secret != nil {
			used = append(used, "Secret/"+v.Secret.SecretName)
		}
	}
	for _, e := range c.EnvFrom {
		if e.SecretRef != nil {
			used = append(used, "Secret/"+e.SecretRef.Name)
		}
	}
	if len(used) < 3 {
		t.Errorf("the pods use only %v", used)
	}
	for _, u := range used {
		if !have[u] {
			t.Errorf("the pods use %s, which the build does not produce", u)
		}
	}

	// The operator's rules carry every group of the rule file.
	if len(pr.Spec.Groups) < 3 {
		t.Errorf("PrometheusRule has %d groups", len(pr.Spec.Groups))
	}
	t.Logf("built and strictly decoded: image %s, release=%s, %d rule groups", c.Image, release, len(pr.Spec.Groups))
}

// TestStrictDecodingRefusesUnknownFields shows the check can fail: a
// StatefulSet with a misspelt field (replica instead of replicas) and a
// ServiceMonitor endpoint with a field the operator does not know are
// refused, while the lenient decoding Kubernetes' client would apply
// accepts them.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	for _, c := range []struct {
		doc string
		v   any
	}{
		{`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"x"},"spec":{"replica":2}}`, &appsv1.StatefulSet{}},
		{`{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"x"},"spec":{"endpoints":[{"port":"http","scrapeInterval":"30s"}]}}`, &monitoringv1.ServiceMonitor{}},
	} {
		if err := strictDecode([]byte(c.doc), c.v); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("%s: %v, want an unknown field error", c.doc, err)
		}
		if err := json.Unmarshal([]byte(c.doc), c.v); err != nil {
			t.Errorf("lenient decoding refuses it too (%v): the case shows nothing", err)
		}
	}
}

// TestKubectlKustomizeAgrees builds the kustomization with `kubectl
// kustomize` too when kubectl is installed (it embeds its own kustomize
// version): both produce the same objects.
func TestKubectlKustomizeAgrees(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed; the kustomize Go API built the kustomization above")
	}
	dir := t.TempDir()
	operatorCopy(t, dir)
	out, err := exec.Command(kubectl, "kustomize", dir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	var fromKubectl []string
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var meta struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		fromKubectl = append(fromKubectl, meta.Kind+"/"+meta.Metadata.Namespace+"/"+meta.Metadata.Name)
	}
	var fromAPI []string
	for _, r := range build(t, dir).Resources() {
		fromAPI = append(fromAPI, r.GetKind()+"/"+r.GetNamespace()+"/"+r.GetName())
	}
	sort.Strings(fromKubectl)
	sort.Strings(fromAPI)
	if strings.Join(fromKubectl, " ") != strings.Join(fromAPI, " ") {
		t.Errorf("kubectl kustomize gives %v, the Go API %v", fromKubectl, fromAPI)
	}
}
