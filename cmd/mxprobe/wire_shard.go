package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/probes/shard"
)

// Sharding: `serve --shard.count=N --shard.index=I` (or the StatefulSet
// ordinal of $HOSTNAME when the index is not given) runs only this replica's
// share of the tenants, chosen by rendezvous hashing. Global probes (versions,
// synapse_metrics) run on every replica.

// addShardFlags adds the sharding flags to serve; runWith resolves them into
// c.shard (resolveShard) once the command line is parsed and serve chosen.
func addShardFlags(cmd *kingpin.CmdClause, c *cli) {
	c.shard = shard.Shard{Index: 0, Count: 1}
	cmd.Flag("shard.count", "Number of replicas sharing the tenants (rendezvous hashing on the tenant id). Alerts of a sharded deployment should go through Alertmanager.").
		Default("1").Envar("MXPROBE_SHARD_COUNT").IntVar(&c.shardCount)
	cmd.Flag("shard.index", "This replica's shard, 0 to shard.count-1; when absent and shard.count > 1, the StatefulSet ordinal at the end of $HOSTNAME (mxprobe-2 is shard 2).").
		Default("-1").Envar("MXPROBE_SHARD_INDEX").IntVar(&c.shardIndex)
}

// newShardInfo is mxprobe_shard_info and mxprobe_shard_count. The count is
// also a value (not only a label) so that a rule can compare the number of
// shards that report with it: PromQL cannot turn a label into a number
// (MxprobeShardsMissing in deploy/prometheus/mxprobe.rules.yml).
func newShardInfo(s shard.Shard, logger *slog.Logger) prometheus.Collector {
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "mxprobe_shard_info",
		Help:        "This replica's shard: index and count of the tenant sharding (count 1 when not sharded).",
		ConstLabels: prometheus.Labels{"shard_index": strconv.Itoa(s.Index), "shard_count": strconv.Itoa(s.Count)},
	})
	info.Set(1)
	count := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mxprobe_shard_count",
		Help: "Replicas configured to share the tenants (--shard.count; 1 when not sharded).",
	})
	count.Set(float64(s.Count))
	if s.Enabled() {
		logger.Info("sharded: running this replica's share of the tenants", "shard_index", s.Index, "shard_count", s.Count)
	}
	return collectors{info, count}
}

// collectors registers several collectors as one.
type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

// osHostname is the source of the StatefulSet ordinal.
func osHostname() string {
	if h := os.Getenv("HOSTNAME"); h != "" {
		return h
	}
	h, _ := os.Hostname()
	return h
}

// resolveShard turns the flags into a shard; index -1 means "from the host name".
func resolveShard(index, count int, host func() string) (shard.Shard, error) {
	if count < 1 {
		return shard.Shard{}, fmt.Errorf("--shard.count must be at least 1, got %d", count)
	}
	if count == 1 && index <= 0 {
		return shard.Shard{Index: 0, Count: 1}, nil
	}
	if index < 0 {
		n, err := shard.OrdinalFromHostname(host())
		if err != nil {
			return shard.Shard{}, fmt.Errorf("--shard.index not given and %v", err)
		}
		index = n
	}
	s := shard.Shard{Index: index, Count: count}
	if err := s.Validate(); err != nil {
		return shard.Shard{}, fmt.Errorf("--shard.index/--shard.count: %v", err)
	}
	return s, nil
}
