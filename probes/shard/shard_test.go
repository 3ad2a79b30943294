package shard

import (
	"fmt"
	"testing"
)

func tenants(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("tenant-%04d", i)
	}
	return ids
}

// TestThousandTenantsThreeShards is the acceptance test: every tenant
// in exactly one shard, sizes within 10% of even, and going to 4 shards moves
// at most 30% of the tenants.
func TestThousandTenantsThreeShards(t *testing.T) {
	ids := tenants(1000)
	owners := map[string]int{}
	for i := 0; i < 3; i++ {
		s := Shard{Index: i, Count: 3}
		got := s.Filter(ids)
		even := float64(len(ids)) / 3
		if d := float64(len(got)) - even; d > 0.1*even || d < -0.1*even {
			t.Errorf("shard %d/3 has %d tenants, more than 10%% from %.0f", i, len(got), even)
		}
		t.Logf("shard %d/3: %d tenants", i, len(got))
		for _, id := range got {
			if prev, dup := owners[id]; dup {
				t.Fatalf("tenant %s is in shards %d and %d", id, prev, i)
			}
			owners[id] = i
		}
	}
	if len(owners) != len(ids) {
		t.Fatalf("%d of %d tenants are in a shard", len(owners), len(ids))
	}
	moved := 0
	for _, id := range ids {
		if Of(id, 4) != owners[id] {
			moved++
		}
	}
	t.Logf("3 -> 4 shards moves %d of %d tenants", moved, len(ids))
	if moved > 300 {
		t.Errorf("3 -> 4 shards moves %d tenants, more than 30%%", moved)
	}
	if moved < 150 {
		t.Errorf("3 -> 4 shards moves only %d tenants: the new shard should win about a quarter", moved)
	}
}

// TestMovesOnlyToNewShard checks the rendezvous property: a tenant that moves
// when a shard is added moves to the new shard, never between old ones.
func TestMovesOnlyToNewShard(t *testing.T) {
	for _, id := range tenants(500) {
		for n := 1; n < 8; n++ {
			a, b := Of(id, n), Of(id, n+1)
			if a != b && b != n {
				t.Fatalf("tenant %s moved from %d to old shard %d going %d -> %d", id, a, b, n, n+1)
			}
		}
	}
}

func TestSingleShardKeepsAll(t *testing.T) {
	ids := tenants(10)
	if got := (Shard{Index: 0, Count: 1}).Filter(ids); len(got) != 10 {
		t.Fatalf("one shard kept %d of 10", len(got))
	}
}

func TestValidate(t *testing.T) {
	for _, s := range []Shard{{0, 0}, {-1, 3}, {3, 3}} {
		if s.Validate() == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if err := (Shard{2, 3}).Validate(); err != nil {
		t.Errorf("2/3 rejected: %v", err)
	}
}

func TestOrdinalFromHostname(t *testing.T) {
	for host, want := range map[string]int{"mxprobe-0": 0, "mxprobe-12": 12, "my-probe-set-3": 3} {
		got, err := OrdinalFromHostname(host)
		if err != nil || got != want {
			t.Errorf("%s: got %d, %v; want %d", host, got, err, want)
		}
	}
	for _, host := range []string{"mxprobe", "mxprobe-", "mxprobe-x", "mxprobe-+1", ""} {
		if _, err := OrdinalFromHostname(host); err == nil {
			t.Errorf("%q accepted", host)
		}
	}
}

func BenchmarkFilter1000(b *testing.B) {
	ids := tenants(1000)
	s := Shard{Index: 1, Count: 4}
	for b.Loop() {
		_ = s.Filter(ids)
	}
}
