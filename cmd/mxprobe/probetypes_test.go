package main

import (
	"strings"
	"testing"
)

// TestProbeTypeSettingsErrors: a probe type of the probetype shape
// (room_message) decodes and validates its own settings, with the field and
// the line; a key no part of the probe's type reads is an error, for every
// type (it used to be ignored silently).
func TestProbeTypeSettingsErrors(t *testing.T) {
	cfg := writeFile(t, "c.yml", `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
tenants:
  - {id: a, bot: {user: bot, password: pw}}
probes:
  - name: rm
    type: room_message
    room_message:
      room_id: "not-a-room"
      min_power_level: 150
  - {name: rm2, type: room_message, room_message: {room_id: "!r:example.org", bogus: 1}}
`)
	code, out, errOut := runCLI(t, "check-config", "--config.file", cfg)
	if code != 1 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		`c.yml:8: probe "rm": room_message.room_id: "not-a-room" is not a room id`,
		`room_message.min_power_level: 150 is outside 0..100`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	cfg = writeFile(t, "d.yml", `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
tenants:
  - {id: a, room_id: "!r:example.org", bot: {user: bot, password: pw}}
probes:
  - {name: rm, type: room_message, room_message: {bogus: 1}}
`)
	if code, _, errOut := runCLI(t, "check-config", "--config.file", cfg); code != 1 || !strings.Contains(errOut, `d.yml:5: probe "rm": room_message.bogus: unknown field`) {
		t.Errorf("unknown settings field: exit %d\n%s", code, errOut)
	}
	cfg = writeFile(t, "e.yml", `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
probes:
  - name: v
    type: versions
    room_message: {room_id: "!r:example.org"}
`)
	if code, _, errOut := runCLI(t, "check-config", "--config.file", cfg); code != 1 || !strings.Contains(errOut, `e.yml:5: probe "v": room_message: unknown field for probes of type versions`) {
		t.Errorf("settings of another type: exit %d\n%s", code, errOut)
	}
	// A valid one passes.
	cfg = writeFile(t, "f.yml", `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
tenants:
  - {id: a, bot: {user: bot, password: pw}}
probes:
  - {name: rm, type: room_message, room_message: {room_id: "!r:example.org", join: false}}
`)
	if code, out, errOut := runCLI(t, "check-config", "--config.file", cfg); code != 0 {
		t.Errorf("valid room_message: exit %d\n%s\n%s", code, out, errOut)
	}
}
