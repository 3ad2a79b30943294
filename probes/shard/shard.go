// Package shard spreads tenants over the replicas of a sharded mxprobe
// deployment with rendezvous (highest random weight) hashing: every replica
// computes, for each tenant, a score per shard and keeps the tenants whose
// highest score is its own. No coordination is needed, every tenant lands on
// exactly one shard, and going from N to N+1 shards moves only the tenants
// the new shard wins, about 1/(N+1) of them.
package shard

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Shard is one replica's place in a sharded deployment.
type Shard struct {
	Index int
	Count int
}

// Validate reports a shard that cannot exist.
func (s Shard) Validate() error {
	if s.Count < 1 {
		return fmt.Errorf("shard count must be at least 1, got %d", s.Count)
	}
	if s.Index < 0 || s.Index >= s.Count {
		return fmt.Errorf("shard index must be in [0, %d), got %d", s.Count, s.Index)
	}
	return nil
}

// Enabled reports whether there is more than one shard.
func (s Shard) Enabled() bool { return s.Count > 1 }

// Of returns the shard index of tenant id among count shards.
func Of(id string, count int) int {
	if count <= 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	base := h.Sum64()
	best, bestScore := 0, uint64(0)
	for i := 0; i < count; i++ {
		score := mix(base ^ mix(uint64(i)+0x9e3779b97f4a7c15))
		if i == 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// mix is the splitmix64 finaliser: FNV alone is too weak in its high bits to
// rank shards evenly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Owns reports whether this shard runs tenant id.
func (s Shard) Owns(id string) bool { return Of(id, s.Count) == s.Index }

// Filter keeps the ids this shard owns, in their order.
func (s Shard) Filter(ids []string) []string {
	if !s.Enabled() {
		return ids
	}
	out := make([]string, 0, len(ids)/s.Count+1)
	for _, id := range ids {
		if s.Owns(id) {
			out = append(out, id)
		}
	}
	return out
}

// OrdinalFromHostname returns the StatefulSet ordinal of a pod name such as
// "mxprobe-2" (the number after the last dash).
func OrdinalFromHostname(host string) (int, error) {
	i := strings.LastIndexByte(host, '-')
	if i < 0 || i == len(host)-1 {
		return 0, fmt.Errorf("host name %q does not end in -<ordinal> (a StatefulSet pod name such as mxprobe-0)", host)
	}
	digits := host[i+1:]
	n, err := strconv.Atoi(digits)
	if err != nil || strings.Trim(digits, "0123456789") != "" {
		return 0, fmt.Errorf("host name %q does not end in -<ordinal> (a StatefulSet pod name such as mxprobe-0)", host)
	}
	return n, nil
}
