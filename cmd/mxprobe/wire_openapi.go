package main

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
)

// warnOpenAPI logs one warning when the daemon serves its API without a
// token on an address other hosts can reach: anyone there may then run
// probes, reload and silence alerts. It reports whether it warned.
func warnOpenAPI(logger *slog.Logger, listen []string, token string) bool {
	if token != "" {
		return false
	}
	var open []string
	for _, a := range listen {
		if !loopbackListen(a) {
			open = append(open, a)
		}
	}
	if len(open) == 0 {
		return false
	}
	logger.Warn("the API is served without a token on a non-loopback address: anyone who reaches it can run probes, reload and silence alerts; set web.api_token_file",
		"listen", strings.Join(open, ","))
	return true
}

// loopbackListen: the listen address binds loopback only ("127.0.0.1:9787",
// "[::1]:9787", "localhost:9787"); ":9787" binds every interface.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
