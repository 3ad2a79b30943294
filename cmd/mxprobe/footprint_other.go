//go:build !linux

package main

import (
	"log/slog"
	"time"
)

const pageOutAfter = 20 * time.Second

// pageOutBinary is Linux only (footprint_linux.go).
func pageOutBinary(*slog.Logger) int64 { return 0 }
