package main

import (
	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/matrix"
)

// The room round trip and the persistent-room message probe. The stale-room
// sweep runs inside the round-trip prober (first run of each tenant after
// start or reload, then every roundtrip.sweep_interval).
func init() {
	builders[config.TypeRoundtrip] = func(d *deps, p *config.Probe) (probes.Prober, error) {
		return &matrix.RoundtripProbe{Name: p.Name, Manager: d.auth, Config: d.cfg, Settings: p.Roundtrip}, nil
	}
	builders[config.TypeRoomMessage] = func(d *deps, p *config.Probe) (probes.Prober, error) {
		return &matrix.RoomMessageProbe{Name: p.Name, Manager: d.auth, Config: d.cfg, Settings: p.RoomMessage}, nil
	}
}
