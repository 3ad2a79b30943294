package testenv

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNSServer is a local authoritative DNS server on loopback (UDP and TCP,
// one port) answering from records a test sets: SRV, A and AAAA. Names
// are absolute ("hs1.test."); a name with no record of the asked type
// answers NOERROR with no answer when it has records of another type, and
// NXDOMAIN otherwise, as a real zone does.
type DNSServer struct {
	// Addr is host:port to point resolvers at.
	Addr string

	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case name
	fail    map[string]int      // names answered with this rcode
	udp     *dns.Server
	tcp     *dns.Server
}

// NewDNSServer starts a DNS server, stopped at the test's cleanup.
func NewDNSServer(t testing.TB) *DNSServer {
	t.Helper()
	// UDP and TCP on one port: the UDP port the kernel picks may be taken
	// for TCP by another process, so a few ports are tried.
	var (
		pc  net.PacketConn
		l   net.Listener
		err error
	)
	for attempt := 0; attempt < 20; attempt++ {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &DNSServer{Addr: pc.LocalAddr().String(), records: map[string][]dns.RR{}, fail: map[string]int{}}
	h := dns.HandlerFunc(s.serve)
	started := make(chan struct{}, 2)
	s.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
	s.tcp = &dns.Server{Listener: l, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
	go func() { _ = s.udp.ActivateAndServe() }()
	go func() { _ = s.tcp.ActivateAndServe() }()
	<-started
	<-started
	t.Cleanup(func() {
		_ = s.udp.Shutdown()
		_ = s.tcp.Shutdown()
	})
	return s
}

// SRV adds an SRV record: name is "_matrix-fed._tcp.hs1.test".
func (s *DNSServer) SRV(name string, priority, weight, port uint16, target string) {
	s.add(&dns.SRV{Hdr: hdr(name, dns.TypeSRV), Priority: priority, Weight: weight, Port: port, Target: dns.Fqdn(target)})
}

// A adds an A (or, for an IPv6 address, AAAA) record.
func (s *DNSServer) A(name, ip string) {
	addr := net.ParseIP(ip)
	if v4 := addr.To4(); v4 != nil {
		s.add(&dns.A{Hdr: hdr(name, dns.TypeA), A: v4})
		return
	}
	s.add(&dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: addr})
}

// Fail makes every question about name answer with rcode (SERVFAIL, ...).
func (s *DNSServer) Fail(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[strings.ToLower(dns.Fqdn(name))] = rcode
}

// Clear removes every record and failure of name.
func (s *DNSServer) Clear(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := strings.ToLower(dns.Fqdn(name))
	delete(s.records, n)
	delete(s.fail, n)
}

func hdr(name string, typ uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(name), Rrtype: typ, Class: dns.ClassINET, Ttl: 1}
}

func (s *DNSServer) add(rr dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := strings.ToLower(rr.Header().Name)
	s.records[n] = append(s.records[n], rr)
}

func (s *DNSServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		n := strings.ToLower(q.Name)
		s.mu.Lock()
		rcode, failing := s.fail[n]
		rrs, known := s.records[n]
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		s.mu.Unlock()
		switch {
		case failing:
			m.Rcode = rcode
			m.Answer = nil
		case !known:
			m.Rcode = dns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m)
}
