// Package matrix holds the probes that talk to a homeserver's client API:
// reachability (versions), room round trips and persistent-room messages.
package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeVersions is the versions probe type's name.
const TypeVersions = "versions"

// Steps of versions runs: one pair per homeserver.
const (
	StepVersions  = "versions"
	StepWellKnown = "well_known"
)

// VersionsType is the versions probe type: every homeserver of the
// configuration, checked every 30 s, without settings; a configuration
// without probes gets one.
func VersionsType() probetype.Type {
	return probetype.Define(probetype.Def[struct{}]{
		Name: TypeVersions, Schedule: "@every 30s", Timeout: 10 * time.Second,
		Default: true,
		Steps:   []string{StepVersions, StepWellKnown},
		Classes: probes.SharedClasses(),
		New: func(in probetype.Inputs, _ *struct{}) (probes.Prober, error) {
			return &VersionsProbe{Name: in.Name, HTTP: in.HTTP, Homeservers: in.Homeservers}, nil
		},
	})
}

// VersionsProbe checks that each configured homeserver answers
// /_matrix/client/versions with a spec version list, and that its
// /.well-known/matrix/client (when served) is valid JSON.
type VersionsProbe struct {
	Name string
	HTTP *http.Client
	// Homeservers are the base URLs to check (see Homeservers).
	Homeservers []string
}

// Homeservers lists the distinct homeserver URLs of the configuration.
func Homeservers(c *config.Config) []string { return c.Homeservers() }

// Run implements probes.Prober.
func (p *VersionsProbe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeVersions, tenant)
	hss := p.Homeservers
	if len(hss) == 0 {
		rec.AddStep(StepVersions, 0, probes.Errorf(probes.ClassConfig, "no homeserver configured"))
		return rec.Finish()
	}
	for _, hs := range hss {
		if rec.Step(StepVersions, func() error { return p.versions(ctx, hs) }) != nil {
			continue
		}
		rec.Note(hs)
		_ = rec.Step(StepWellKnown, func() error {
			served, err := p.wellKnown(ctx, hs)
			if err == nil && !served {
				rec.Note("not served")
			}
			return err
		})
	}
	return rec.Finish()
}

func (p *VersionsProbe) versions(ctx context.Context, hs string) error {
	var body struct {
		Versions []string `json:"versions"`
	}
	status, err := getJSON(ctx, p.HTTP, hs+"/_matrix/client/versions", &body)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return &probes.Error{Class: classOrBad(status), Status: status, Err: fmt.Errorf("versions: HTTP %d", status)}
	}
	if len(body.Versions) == 0 {
		return &probes.Error{Class: probes.ClassBadResponse, Status: status, Err: fmt.Errorf("versions: no spec versions in the answer")}
	}
	return nil
}

func (p *VersionsProbe) wellKnown(ctx context.Context, hs string) (bool, error) {
	var body struct {
		Homeserver struct {
			BaseURL string `json:"base_url"`
		} `json:"m.homeserver"`
	}
	status, err := getJSON(ctx, p.HTTP, hs+"/.well-known/matrix/client", &body)
	if err != nil {
		if status == http.StatusNotFound {
			return false, nil
		}
		return true, err
	}
	if status == http.StatusNotFound {
		return false, nil
	}
	if status != http.StatusOK {
		return true, &probes.Error{Class: classOrBad(status), Status: status, Err: fmt.Errorf("well-known: HTTP %d", status)}
	}
	if body.Homeserver.BaseURL == "" {
		return true, &probes.Error{Class: probes.ClassBadResponse, Status: status, Err: fmt.Errorf("well-known: no m.homeserver.base_url")}
	}
	return true, nil
}

func classOrBad(status int) probes.Class {
	if c := probes.ClassForStatus(status); c != probes.ClassNone {
		return c
	}
	return probes.ClassBadResponse
}

// getJSON fetches url and decodes a 200 answer's JSON body into out. It
// returns the status; a non-200 status is not an error by itself.
func getJSON(ctx context.Context, c *http.Client, url string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, probes.Errorf(probes.ClassConfig, "bad URL: %v", err)
	}
	req.Header.Set("User-Agent", mxclient.UserAgent)
	resp, err := c.Do(req)
	if err != nil {
		return 0, &probes.Error{Class: probes.Classify(err), Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, nil
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "" && ct != "application/json" {
		return resp.StatusCode, &probes.Error{Class: probes.ClassBadResponse, Status: resp.StatusCode,
			Err: fmt.Errorf("expected application/json, got %s", ct)}
	}
	const limit = 1 << 20
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return resp.StatusCode, &probes.Error{Class: probes.Classify(err), Status: resp.StatusCode, Err: fmt.Errorf("reading body: %w", err)}
	}
	if len(b) > limit {
		return resp.StatusCode, &probes.Error{Class: probes.ClassBadResponse, Status: resp.StatusCode, Err: fmt.Errorf("body over %d bytes", limit)}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.StatusCode, &probes.Error{Class: probes.ClassBadResponse, Status: resp.StatusCode, Err: fmt.Errorf("invalid JSON: %v", err)}
	}
	return resp.StatusCode, nil
}
