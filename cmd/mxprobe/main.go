// Command mxprobe watches a Matrix deployment (Synapse behind MAS, one bot per
// tenant) from the outside: it logs the bots in, runs room round trips,
// scrapes Synapse's metrics, exports what it sees for Prometheus and alerts
// when it breaks.
package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/mxprobe/mxprobe/probes/shard"
)

// DefaultListenAddress is mxprobe's default port.
const DefaultListenAddress = ":9787"

// defaultReloadTimeout is --config.reload-timeout's default: a
// configuration takes well under a second to read and assemble; this bounds
// a secret file on a hung mount and the like.
const defaultReloadTimeout = 30 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// system is what a command takes from its surroundings besides the command
// line and the environment; tests substitute parts of it.
type system struct {
	// isTerminal reports whether w is a terminal, where `mxprobe run`
	// shows live progress.
	isTerminal func(w io.Writer) bool
	// hostname is the source of the StatefulSet ordinal (--shard.index).
	hostname func() string
}

func osSystem() system { return system{isTerminal: isCharDevice, hostname: osHostname} }

// cli holds the parsed command line.
type cli struct {
	configFile string
	logConfig  *promslog.Config
	// reloadTimeout bounds reading and assembling a configuration.
	reloadTimeout time.Duration

	// serve
	webFlags *web.FlagConfig
	web      webHardening

	// run
	runProbe   string
	runTenants []string
	runAll     bool
	runOutput  string
	runTarget  string
	runWindow  string
	runTimeout string

	// check-config
	strict bool

	// healthcheck
	health healthcheckFlags

	// serve: sharding (--shard.index, --shard.count) and the shard they
	// resolve to (0 of 1, everything, unless serve says otherwise).
	shardIndex, shardCount int
	shard                  shard.Shard

	sys system
}

// untilTerminated passes kingpin's output to w until kingpin terminated
// (see runWith): what it writes after its exit point is dropped.
type untilTerminated struct {
	w    io.Writer
	done *bool
}

func (u untilTerminated) Write(p []byte) (int, error) {
	if *u.done {
		return len(p), nil
	}
	return u.w.Write(p)
}

func run(args []string, stdout, stderr io.Writer) int {
	return runWith(args, stdout, stderr, osSystem())
}

func runWith(args []string, stdout, stderr io.Writer, sys system) int {
	app := kingpin.New("mxprobe", "Watches a Matrix deployment (Synapse + MAS) from the outside and says when it breaks.")
	// Kingpin's own hooks: usage texts go to stdout, its messages to stderr,
	// and where it would exit (after printing help for --help, -h or `help
	// [command]`, or after an error of `help nosuch`) it records the status
	// instead. Parse then goes on to the end, but what kingpin writes after
	// that point is dropped (it would have exited) and no command runs: the
	// recorded status is the answer. Nothing kingpin runs before printing
	// help (pre-actions) validates flags, so help never fails on flags whose
	// defaults it left unset; commands check their flags after parsing
	// (serve's shard, below).
	terminated, exitCode := false, 0
	app.UsageWriter(untilTerminated{stdout, &terminated})
	app.ErrorWriter(untilTerminated{stderr, &terminated})
	app.Terminate(func(code int) {
		if !terminated {
			terminated, exitCode = true, code
		}
	})
	app.HelpFlag.Short('h')
	c := &cli{logConfig: &promslog.Config{}, sys: sys}
	app.Flag("config.file", "Configuration file (YAML). Tenants may also come from TENANTS_B64.").
		Default("").Envar("MXPROBE_CONFIG").StringVar(&c.configFile)
	promslogflag.AddFlags(app, c.logConfig)

	serveCmd := app.Command("serve", "Run the daemon: scheduled probes, /metrics, API, status page, alerts.").Default()
	c.webFlags = kingpinflag.AddFlags(serveCmd, DefaultListenAddress)
	addHardeningFlags(serveCmd, c)
	serveCmd.Flag("config.reload-timeout", "Longest time to read and assemble a configuration (at start, SIGHUP, /-/reload); a slower one is not applied.").
		Default(defaultReloadTimeout.String()).DurationVar(&c.reloadTimeout)
	addShardFlags(serveCmd, c)

	runCmd := app.Command("run", "Run one probe now, without the daemon, and print its result.")
	runCmd.Arg("probe", "Probe name (as configured, or a probe type).").Required().StringVar(&c.runProbe)
	runCmd.Flag("tenant", "Tenant id (repeatable).").StringsVar(&c.runTenants)
	runCmd.Flag("all", "Run for every tenant of the probe.").BoolVar(&c.runAll)
	runCmd.Flag("output", "Output format: text or json.").Short('o').Default("text").EnumVar(&c.runOutput, "text", "json")
	runCmd.Flag("target", "Target URL for probes that take one (synapse_metrics, http), without a config file.").StringVar(&c.runTarget)
	runCmd.Flag("window", "Time between the two scrapes of synapse_metrics.").Default("15s").StringVar(&c.runWindow)
	runCmd.Flag("timeout", "Override the probe's timeout.").StringVar(&c.runTimeout)

	checkCmd := app.Command("check-config", "Check the configuration (file and TENANTS_B64) and exit.")
	checkCmd.Flag("strict", "Fail when the schedules would exceed the homeserver's rate limits (synapse_limits).").BoolVar(&c.strict)
	healthCmd := app.Command("healthcheck", "Ask a running daemon's /-/healthy (with the TLS and basic auth of its web config); exit 0 when it answers 200, 1 otherwise. For container healthchecks.")
	healthCmd.Flag("url", "URL to ask; default /-/healthy at --web.listen-address, over HTTPS when the web config has TLS.").StringVar(&c.health.url)
	healthCmd.Flag("web.listen-address", "The daemon's listen address (as given to serve); a wildcard host means this host.").
		Default(DefaultListenAddress).StringVar(&c.health.listen)
	healthCmd.Flag("web.config.file", "The daemon's web config file (as given to serve): its TLS certificate is trusted, its basic auth answered.").
		Default("").StringVar(&c.health.webConfig)
	healthCmd.Flag("basic-auth.username", "User to send when the web config requires basic auth.").
		Envar("MXPROBE_HEALTHCHECK_USERNAME").StringVar(&c.health.username)
	healthCmd.Flag("basic-auth.password-file", "File holding that user's password.").
		Envar("MXPROBE_HEALTHCHECK_PASSWORD_FILE").StringVar(&c.health.passwordFile)
	healthCmd.Flag("timeout", "Give up after this long (the answer counts as unhealthy).").
		Default(healthcheckDefaultTimeout.String()).DurationVar(&c.health.timeout)
	versionCmd := app.Command("version", "Print the version.")

	cmd, err := app.Parse(args)
	if terminated {
		return exitCode // help was printed; what Parse says after it does not matter
	}
	if err != nil {
		fmt.Fprintf(stderr, "mxprobe: %v\n", err)
		return 2
	}
	c.logConfig.Writer = stderr
	logger := promslog.New(c.logConfig)

	switch cmd {
	case serveCmd.FullCommand():
		if c.shard, err = resolveShard(c.shardIndex, c.shardCount, c.sys.hostname); err != nil {
			fmt.Fprintf(stderr, "mxprobe: %v\n", err)
			return 2
		}
		return serve(c, logger)
	case runCmd.FullCommand():
		return runOnce(c, logger, stdout, stderr)
	case checkCmd.FullCommand():
		return checkConfig(c, stdout, stderr)
	case healthCmd.FullCommand():
		return healthcheck(c.health, stdout, stderr)
	case versionCmd.FullCommand():
		fmt.Fprintln(stdout, version.Print("mxprobe"))
		return 0
	}
	return 2
}
