package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes/shard"
)

func TestResolveShard(t *testing.T) {
	host := func(h string) func() string { return func() string { return h } }
	for _, tc := range []struct {
		index, count int
		host         string
		want         shard.Shard
		err          string
	}{
		{-1, 1, "", shard.Shard{Index: 0, Count: 1}, ""},
		{2, 3, "whatever", shard.Shard{Index: 2, Count: 3}, ""},
		{-1, 3, "mxprobe-1", shard.Shard{Index: 1, Count: 3}, ""},
		{-1, 3, "laptop", shard.Shard{}, "does not end in -<ordinal>"},
		{-1, 3, "mxprobe-3", shard.Shard{}, "shard index must be in [0, 3)"},
		{0, 0, "", shard.Shard{}, "at least 1"},
		{1, 1, "", shard.Shard{}, "shard index must be in [0, 1)"},
	} {
		got, err := resolveShard(tc.index, tc.count, host(tc.host))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: error %v, want %q", tc, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: got %+v, %v", tc, got, err)
		}
	}
}

func TestShardFlagRejected(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"serve", "--shard.count=3", "--shard.index=3", "--config.file=/nonexistent.yml"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "shard index must be in [0, 3)") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

// TestShardFilterInBuildJobs checks that the shard chosen by the flags
// narrows per-tenant probes, and leaves global probes alone.
func TestShardFilterInBuildJobs(t *testing.T) {
	var b strings.Builder
	b.WriteString("global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}\ntenants:\n")
	for i := 0; i < 30; i++ {
		fmt.Fprintf(&b, "  - {id: t%02d, bot: {method: password, user: bot%02d, password: pw}}\n", i, i)
	}
	b.WriteString("probes:\n  - {name: versions, type: versions}\n  - {name: login, type: login}\n")
	cfg, err := config.Parse([]byte(b.String()), "test.yml", func(string) string { return "" }, (&env{}).kinds()...)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i := 0; i < 3; i++ {
		e := &env{logger: discard(), shard: shard.Shard{Index: i, Count: 3}}
		rt, err := assembleProbes(cfg, e, newStores(nil, func(string) string { return "" }))
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range rt.jobs {
			switch j.Name {
			case "versions":
				if len(j.Subjects) != 1 {
					t.Errorf("shard %d: versions has subjects %v", i, j.Subjects)
				}
			case "login":
				if len(j.Subjects) == 0 || len(j.Subjects) == 30 {
					t.Errorf("shard %d: login runs %d of 30 tenants", i, len(j.Subjects))
				}
				for _, s := range j.Subjects {
					seen[s]++
				}
			}
		}
	}
	if len(seen) != 30 {
		t.Fatalf("%d of 30 tenants run on some shard", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("tenant %s runs on %d shards", id, n)
		}
	}
}
