package synapse

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mxprobe/mxprobe/probes"
)

// The parser is a line scanner over the text exposition format (0.0.4, the
// format Synapse serves; OpenMetrics text is accepted too). Every line is
// checked for syntax, so a garbage, truncated or HTML page gives an error
// naming the line; but only the few families the health signals need are
// materialised, into a compact Snapshot keyed by series. Everything else is
// validated and dropped without allocating.

// family identifies a metric family the signals read.
type family uint8

const (
	famNone family = iota
	famRespTime
	famResponses
	famReqReceived
	famTxnCount
	famTxnSum
	famSchedTime
	famEventsPersisted
	famStagingPDUs
	famStagingOldest
	famEDUs
	famPresence
	famReactorTick
	famPersistedPos
	famProcessingPos
	famProcessingLag
	famFedPendingPDUs
	famFedPendingEDUs
	famFedClientReq
	famFedClientResp
	famRateLimitReject
	famCacheLookups
	famCacheHits
	famReactorLastSeen
	famBgInFlight
	famPushFailed
	famPushProcessed
	famForwardExtrem
	famCPU
	famCPUUser
	famCPUSystem
	famRSS
	famFDs
	famStart
	famBuildInfo
	famCount
)

// suffix is the part of a histogram a sample belongs to.
type suffix uint8

const (
	sfxValue suffix = iota
	sfxBucket
	sfxSum
	sfxCount
)

type nameInfo struct {
	fam family
	sfx suffix
}

// wanted maps exposed sample names to what they feed. Legacy names of older
// Synapse releases (and of the operations guide) map to the same families.
var wanted = func() map[string]nameInfo {
	// Names as Synapse v1.157.1 exposes them (testdata/catalog-v1.157.1.tsv);
	// the unsuffixed counter names are those of prometheus_client before
	// 0.4 (Synapse < 0.99), kept where the family is otherwise the same.
	m := map[string]nameInfo{
		"synapse_http_server_responses_total":                     {famResponses, sfxValue},
		"synapse_http_server_requests_received_total":             {famReqReceived, sfxValue},
		"synapse_storage_transaction_time_count_total":            {famTxnCount, sfxValue},
		"synapse_storage_transaction_time_count":                  {famTxnCount, sfxValue},
		"synapse_storage_transaction_time_sum_total":              {famTxnSum, sfxValue},
		"synapse_storage_transaction_time_sum":                    {famTxnSum, sfxValue},
		"synapse_storage_events_persisted_events_total":           {famEventsPersisted, sfxValue},
		"synapse_storage_events_persisted_events":                 {famEventsPersisted, sfxValue},
		"synapse_federation_server_number_inbound_pdu_in_staging": {famStagingPDUs, sfxValue},
		"synapse_federation_server_oldest_inbound_pdu_in_staging": {famStagingOldest, sfxValue},
		"synapse_federation_server_received_edus_total":           {famEDUs, sfxValue},
		"synapse_handler_presence_presence_updates_total":         {famPresence, sfxValue},
		"synapse_handler_presence_presence_updates":               {famPresence, sfxValue},
		"synapse_event_persisted_position":                        {famPersistedPos, sfxValue},
		"synapse_event_processing_positions":                      {famProcessingPos, sfxValue},
		"synapse_federation_transaction_queue_pending_pdus":       {famFedPendingPDUs, sfxValue},
		"synapse_federation_transaction_queue_pending_edus":       {famFedPendingEDUs, sfxValue},
		"synapse_http_matrixfederationclient_requests_total":      {famFedClientReq, sfxValue},
		"synapse_http_matrixfederationclient_responses_total":     {famFedClientResp, sfxValue},
		"synapse_rate_limit_reject_total":                         {famRateLimitReject, sfxValue},
		"synapse_util_caches_cache":                               {famCacheLookups, sfxValue},
		"synapse_util_caches_cache_hits":                          {famCacheHits, sfxValue},
		"python_twisted_reactor_last_seen":                        {famReactorLastSeen, sfxValue},
		"synapse_background_process_in_flight_count":              {famBgInFlight, sfxValue},
		"synapse_http_httppusher_http_pushes_failed_total":        {famPushFailed, sfxValue},
		"synapse_http_httppusher_http_pushes_processed_total":     {famPushProcessed, sfxValue},
		"process_cpu_seconds_total":                               {famCPU, sfxValue},
		"process_cpu_user_seconds_total":                          {famCPUUser, sfxValue},
		"process_cpu_system_seconds_total":                        {famCPUSystem, sfxValue},
		"process_resident_memory_bytes":                           {famRSS, sfxValue},
		"process_open_fds":                                        {famFDs, sfxValue},
		"process_start_time_seconds":                              {famStart, sfxValue},
		"synapse_build_info":                                      {famBuildInfo, sfxValue},
		// A gauge histogram (prometheus_client's GaugeHistogram): _gcount and
		// _gsum instead of _count and _sum, and le="inf" in lower case.
		"synapse_forward_extremities_bucket": {famForwardExtrem, sfxBucket},
		"synapse_forward_extremities_gsum":   {famForwardExtrem, sfxSum},
		"synapse_forward_extremities_gcount": {famForwardExtrem, sfxCount},
	}
	for base, f := range map[string]family{
		"synapse_http_server_response_time_seconds": famRespTime,
		"synapse_storage_schedule_time":             famSchedTime,
		"python_twisted_reactor_tick_time":          famReactorTick,
		"synapse_event_processing_lag_by_event":     famProcessingLag,
	} {
		m[base+"_bucket"] = nameInfo{f, sfxBucket}
		m[base+"_sum"] = nameInfo{f, sfxSum}
		m[base+"_count"] = nameInfo{f, sfxCount}
	}
	return m
}()

// bucket is one cumulative histogram bucket.
type bucket struct {
	le, v float64
}

// series is one materialised series (for histograms: all samples of one
// label set without le).
type series struct {
	key     string
	fam     family
	servlet string
	code    string
	tag     string
	// name is the name label (cache, event processing loop).
	name    string
	value   float64
	sum     float64
	count   float64
	hasSum  bool
	hasCnt  bool
	buckets []bucket
}

// Snapshot is what one scrape keeps: the series the signals need.
type Snapshot struct {
	// Time is when the page was fetched.
	Time time.Time
	// Bytes and Samples describe the whole page.
	Bytes   int
	Samples int
	// Version is synapse_build_info's version label, if any.
	Version string

	series map[string]*series
	order  []*series
}

// ParseError is a syntax problem of the page, naming its line.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return e.Msg
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
}

const maxPairs = 32

type span struct{ ns, ne, vs, ve int }

// parser holds the scratch state of one parse.
type parser struct {
	snap  *Snapshot
	prev  *Snapshot
	pairs [maxPairs]span
	np    int
	key   []byte
	slab  []series
}

// Parse reads a whole exposition page. prev, the previous snapshot of the
// same target (may be nil), lets the new snapshot share its immutable
// strings, so a steady target allocates little per scrape.
func Parse(data []byte, prev *Snapshot) (*Snapshot, error) {
	n := 64
	if prev != nil {
		n = len(prev.order) + 16
	}
	p := &parser{
		snap: &Snapshot{Bytes: len(data), series: make(map[string]*series, n), order: make([]*series, 0, n)},
		prev: prev,
		key:  make([]byte, 0, 256),
		slab: make([]series, 0, n),
	}
	if err := p.parse(data); err != nil {
		return nil, err
	}
	for _, s := range p.snap.order {
		if len(s.buckets) > 1 {
			sortBuckets(s.buckets)
		}
	}
	return p.snap, nil
}

func (p *parser) parse(data []byte) error {
	if len(data) == 0 {
		return &ParseError{Msg: "empty page"}
	}
	line := 0
	sawEOF := false
	for len(data) > 0 {
		line++
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return &ParseError{Line: line, Msg: fmt.Sprintf("page ends in the middle of a line (truncated?): %s", quote(data))}
		}
		l := data[:i]
		data = data[i+1:]
		if len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		l = trimLeft(l)
		if len(l) == 0 {
			continue
		}
		if sawEOF {
			return &ParseError{Line: line, Msg: "content after # EOF"}
		}
		switch l[0] {
		case '#':
			eof, err := p.comment(l)
			if err != nil {
				return &ParseError{Line: line, Msg: err.Error()}
			}
			sawEOF = eof
			continue
		case '<':
			return &ParseError{Line: line, Msg: fmt.Sprintf("this is not a metrics page, it looks like HTML: %s", quote(l))}
		}
		if err := p.sample(l); err != nil {
			return &ParseError{Line: line, Msg: err.Error()}
		}
		p.snap.Samples++
	}
	return nil
}

func trimLeft(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// quote shows the start of a bad line, shortened.
func quote(b []byte) string {
	const max = 40
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

var metricTypes = []string{"counter", "gauge", "histogram", "summary", "untyped", "unknown", "gaugehistogram", "info", "stateset"}

// comment checks # HELP / # TYPE lines (other comments are free text).
func (p *parser) comment(l []byte) (eof bool, err error) {
	rest := trimLeft(l[1:])
	kw, rest := word(rest)
	switch string(kw) {
	case "EOF":
		return true, nil
	case "HELP", "TYPE", "UNIT":
	default:
		return false, nil
	}
	rest = trimLeft(rest)
	name, rest := word(rest)
	if len(name) == 0 || nameLen(name) != len(name) {
		return false, fmt.Errorf("# %s: invalid metric name %s", kw, quote(name))
	}
	if string(kw) == "TYPE" {
		typ, tail := word(trimLeft(rest))
		ok := false
		for _, t := range metricTypes {
			if string(typ) == t {
				ok = true
				break
			}
		}
		if !ok || len(bytes.TrimSpace(tail)) > 0 {
			return false, fmt.Errorf("# TYPE %s: unknown type %s", name, quote(typ))
		}
	}
	return false, nil
}

func word(b []byte) (w, rest []byte) {
	i := 0
	for i < len(b) && b[i] != ' ' && b[i] != '\t' {
		i++
	}
	return b[:i], b[i:]
}

func isNameStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
}

func isNameChar(c byte) bool { return isNameStart(c) || c >= '0' && c <= '9' }

// nameLen returns the length of the metric name at the start of b.
func nameLen(b []byte) int {
	if len(b) == 0 || !isNameStart(b[0]) {
		return 0
	}
	i := 1
	for i < len(b) && isNameChar(b[i]) {
		i++
	}
	return i
}

func labelNameLen(b []byte) int {
	if len(b) == 0 || !(isNameStart(b[0]) && b[0] != ':') {
		return 0
	}
	i := 1
	for i < len(b) && isNameChar(b[i]) && b[i] != ':' {
		i++
	}
	return i
}

func (p *parser) sample(l []byte) error {
	n := nameLen(l)
	if n == 0 {
		return fmt.Errorf("expected a metric name, got %s", quote(l))
	}
	info := wanted[string(l[:n])]
	rest := l[n:]
	var labels []byte
	p.np = 0
	if len(rest) > 0 && rest[0] == '{' {
		end, err := p.labels(rest)
		if err != nil {
			return err
		}
		labels = rest[1:end]
		rest = rest[end+1:]
	}
	if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '\t') {
		if len(rest) == 0 {
			return fmt.Errorf("metric %s has no value", l[:n])
		}
		return fmt.Errorf("unexpected %s after metric %s", quote(rest), l[:n])
	}
	rest = trimLeft(rest)
	val, rest := word(rest)
	v, err := parseValue(val)
	if err != nil {
		return fmt.Errorf("metric %s: invalid value %s", l[:n], quote(val))
	}
	rest = trimLeft(rest)
	if len(rest) > 0 {
		ts, tail := word(rest)
		if len(ts) > 0 && ts[0] != '#' {
			if _, err := strconv.ParseFloat(string(ts), 64); err != nil {
				return fmt.Errorf("metric %s: invalid timestamp %s", l[:n], quote(ts))
			}
			rest = trimLeft(tail)
		}
		// An OpenMetrics exemplar ("# {...} v") may follow; anything else is an error.
		if len(rest) > 0 && rest[0] != '#' {
			return fmt.Errorf("metric %s: unexpected %s after the value", l[:n], quote(rest))
		}
	}
	if info.fam == famNone {
		return nil
	}
	return p.record(info, labels, v)
}

func parseValue(b []byte) (float64, error) {
	if len(b) == 0 {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseFloat(string(b), 64)
}

// labels scans {name="value",...} at the start of b and returns the index of
// the closing brace. The spans of the pairs are kept in p.pairs, relative to
// b[1:].
func (p *parser) labels(b []byte) (int, error) {
	i := 1
	for {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		if i >= len(b) {
			return 0, fmt.Errorf("unterminated label set")
		}
		if b[i] == '}' {
			return i, nil
		}
		ln := labelNameLen(b[i:])
		if ln == 0 {
			return 0, fmt.Errorf("invalid label name at %s", quote(b[i:]))
		}
		ns := i
		i += ln
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		if i >= len(b) || b[i] != '=' {
			return 0, fmt.Errorf("label %s: expected '='", b[ns:ns+ln])
		}
		i++
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		if i >= len(b) || b[i] != '"' {
			return 0, fmt.Errorf("label %s: expected a quoted value", b[ns:ns+ln])
		}
		i++
		vs := i
		for {
			if i >= len(b) {
				return 0, fmt.Errorf("label %s: unterminated value", b[ns:ns+ln])
			}
			c := b[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				if i+1 >= len(b) || (b[i+1] != '\\' && b[i+1] != '"' && b[i+1] != 'n') {
					return 0, fmt.Errorf("label %s: invalid escape in value", b[ns:ns+ln])
				}
				i++
			}
			i++
		}
		if p.np < maxPairs {
			p.pairs[p.np] = span{ns - 1, ns - 1 + ln, vs - 1, i - 1}
			p.np++
		}
		i++
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		if i < len(b) && b[i] == ',' {
			i++
			continue
		}
		if i < len(b) && b[i] == '}' {
			return i, nil
		}
		return 0, fmt.Errorf("label set: expected ',' or '}' after label %s", b[ns:ns+ln])
	}
}

// MaxLabelValue is the most bytes of a label value the scraper keeps (a
// cache, servlet or loop name, a status code, a tag, the version): label
// values become parts of signal names, which reach the history, /api,
// /probe and /metrics. Synapse's own are under 64 bytes.
const MaxLabelValue = 128

// labelValue is a label value as kept: unescaped, control characters
// escaped, cut to MaxLabelValue bytes on a rune boundary.
func labelValue(b []byte) string {
	if len(b) > 4*MaxLabelValue {
		b = b[:4*MaxLabelValue] // the rest cannot survive the cut below
	}
	s := probes.EscapeControls(unescape(b), false)
	if len(s) <= MaxLabelValue {
		return s
	}
	cut := MaxLabelValue
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func unescape(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	s := string(b)
	return strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n").Replace(s)
}

// record stores a sample of a wanted family.
func (p *parser) record(info nameInfo, labels []byte, v float64) error {
	// The series key: the family and the label pairs without le, as written.
	p.key = append(p.key[:0], byte(info.fam))
	var le []byte
	hasLE := false
	var servlet, code, tag, lname, version []byte
	last := 0
	for k := 0; k < p.np; k++ {
		sp := p.pairs[k]
		name := labels[sp.ns:sp.ne]
		val := labels[sp.vs:sp.ve]
		switch string(name) {
		case "le":
			if info.sfx == sfxBucket {
				le, hasLE = val, true
				p.key = append(p.key, labels[last:sp.ns]...)
				last = sp.ve + 1
				for last < len(labels) && (labels[last] == ' ' || labels[last] == '\t' || labels[last] == ',') {
					last++
				}
				continue
			}
		case "servlet":
			servlet = val
		case "code":
			code = val
		case "tag":
			tag = val
		case "name":
			lname = val
		case "version":
			version = val
		}
	}
	p.key = append(p.key, labels[last:]...)
	for len(p.key) > 1 && (p.key[len(p.key)-1] == ',' || p.key[len(p.key)-1] == ' ' || p.key[len(p.key)-1] == '\t') {
		p.key = p.key[:len(p.key)-1]
	}
	if info.sfx == sfxBucket && !hasLE {
		return fmt.Errorf("histogram bucket without an le label")
	}
	if info.fam == famBuildInfo && version != nil && p.snap.Version == "" {
		if p.prev != nil && p.prev.Version == string(version) {
			p.snap.Version = p.prev.Version
		} else {
			p.snap.Version = labelValue(version)
		}
	}
	s := p.snap.series[string(p.key)]
	if s == nil {
		if len(p.slab) == cap(p.slab) {
			p.slab = make([]series, 0, 2*cap(p.slab)+16)
		}
		p.slab = append(p.slab, series{fam: info.fam})
		s = &p.slab[len(p.slab)-1]
		var ps *series
		if p.prev != nil {
			ps = p.prev.series[string(p.key)]
		}
		if ps != nil {
			s.key, s.servlet, s.code, s.tag, s.name = ps.key, ps.servlet, ps.code, ps.tag, ps.name
			if info.sfx != sfxValue && len(ps.buckets) > 0 {
				s.buckets = make([]bucket, 0, len(ps.buckets))
			}
		} else {
			s.key = string(p.key)
			if servlet != nil {
				s.servlet = labelValue(servlet)
			}
			if code != nil {
				s.code = labelValue(code)
			}
			if tag != nil {
				s.tag = labelValue(tag)
			}
			if lname != nil {
				s.name = labelValue(lname)
			}
		}
		p.snap.series[s.key] = s
		p.snap.order = append(p.snap.order, s)
	}
	switch info.sfx {
	case sfxValue:
		s.value = v
	case sfxSum:
		s.sum, s.hasSum = v, true
	case sfxCount:
		s.count, s.hasCnt = v, true
	case sfxBucket:
		b, err := parseValue(le)
		if err != nil || b != b {
			return fmt.Errorf("histogram bucket: invalid le %s", quote(le))
		}
		s.buckets = append(s.buckets, bucket{le: b, v: v})
	}
	return nil
}

func sortBuckets(b []bucket) {
	for i := 1; i < len(b); i++ {
		for j := i; j > 0 && b[j].le < b[j-1].le; j-- {
			b[j], b[j-1] = b[j-1], b[j]
		}
	}
}

// isInf reports whether a bucket bound is the +Inf bucket.
func isInf(le float64) bool { return math.IsInf(le, 1) }
