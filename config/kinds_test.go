package config

import "time"

// testKinds stand in for the probe types the daemon registers, whose
// packages import this one: the names and defaults of versions, login and
// roundtrip, without their settings (decoded by the types themselves;
// config_test tests the real ones, types_test.go).
func testKinds() []Kind {
	return []Kind{
		{Name: "versions", Schedule: "@every 30s", Timeout: 10 * time.Second, Default: true},
		{Name: "login", PerTenant: true, Schedule: "@every 1m", Timeout: 30 * time.Second, Default: true,
			SettingsKey: "login", DefaultSchedule: MASLoginSchedule},
		{Name: "roundtrip", PerTenant: true, Schedule: "@every 10m", Timeout: time.Minute, DeriveSchedule: true,
			SettingsKey: "roundtrip"},
	}
}

// parse and load are Parse and Load with testKinds and kinds.
func parse(data []byte, name string, env func(string) string, kinds ...Kind) (*Config, error) {
	return Parse(data, name, env, append(testKinds(), kinds...)...)
}

func load(path string, env func(string) string, kinds ...Kind) (*Config, error) {
	return Load(path, env, append(testKinds(), kinds...)...)
}
