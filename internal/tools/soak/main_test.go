package main

import (
	"strings"
	"testing"
)

// The plan's draw: MAS emulator down only with MAS, and last, so a seed
// draws the same faults without MAS as before it existed; --faults picks
// by name and refuses a fault that does not apply.
func TestFaultPlan(t *testing.T) {
	all, err := faultPlan("", true)
	if err != nil || len(all) != len(faults) || all[len(all)-1].name != masDownFault {
		t.Fatalf("with MAS: %d faults, %v", len(all), err)
	}
	plain, err := faultPlan("", false)
	if err != nil || len(plain) != len(faults)-1 {
		t.Fatalf("without MAS: %d faults, %v", len(plain), err)
	}
	for i, f := range plain {
		if f.name != faults[i].name || f.name == masDownFault {
			t.Errorf("without MAS, fault %d is %q", i, f.name)
		}
	}
	got, err := faultPlan(" MAS emulator down ,429 storm", true)
	if err != nil || len(got) != 2 || got[0].name != masDownFault || got[1].name != "429 storm" {
		t.Errorf("--faults: %v %v", got, err)
	}
	if _, err := faultPlan("MAS emulator down", false); err == nil || !strings.Contains(err.Error(), "unknown fault") {
		t.Errorf("MAS emulator down without MAS: %v", err)
	}
	if _, err := faultPlan("login 502,nothing", true); err == nil {
		t.Error("an unknown fault name was accepted")
	}
}
