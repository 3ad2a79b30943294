package main

import (
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/web"
)

// webHardening are the serve flags that bound what the HTTP side accepts.
type webHardening struct {
	lifecycle      bool
	readTimeout    time.Duration
	maxConnections int
}

// addHardeningFlags adds them to serve.
func addHardeningFlags(cmd *kingpin.CmdClause, c *cli) {
	cmd.Flag("web.enable-lifecycle", "Serve POST/PUT /-/reload (with web.api_token set, it needs the token). Off: 404; SIGHUP still reloads.").
		Default("false").BoolVar(&c.web.lifecycle)
	cmd.Flag("web.read-timeout", "Longest time to read one request, body included.").
		Default(web.DefaultReadTimeout.String()).DurationVar(&c.web.readTimeout)
	cmd.Flag("web.max-connections", "Most open HTTP connections per listener; at the cap the one waiting on its client the longest is closed.").
		Default(strconv.Itoa(web.DefaultMaxConnections)).IntVar(&c.web.maxConnections)
}

// unchanged reports whether cfg is the configuration in force: such a
// reload has nothing to apply, and applying nothing keeps every schedule,
// session and cache as it is. A configuration with a token file always
// counts as changed, so a reload picks up a rotated token (the schedule
// keeps its phase either way).
func (d *daemon) unchanged(cfg *config.Config) bool {
	old := d.config()
	if old == nil || cfg.Web.APITokenFile != "" || cfg.Web.MetricsTokenFile != "" {
		return false
	}
	return old.Equal(cfg)
}
