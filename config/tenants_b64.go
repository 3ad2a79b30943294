package config

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	promcfg "github.com/prometheus/common/config"
)

// platformTenant is the part of the platform's tenant config mxprobe reads
// (OpenMeet's TenantConfig, src/core/constants/constant.ts). Every other field
// (OAuth client settings, admin users, mail settings...) is ignored and never
// logged.
type platformTenant struct {
	ID           *string             `json:"id"`
	Name         string              `json:"name"`
	BotUser      *platformBot        `json:"botUser"`
	MatrixConfig *platformMatrixConf `json:"matrixConfig"`
}

type platformMatrixConf struct {
	HomeserverURL string              `json:"homeserverUrl"`
	ServerName    string              `json:"serverName"`
	BotUser       *platformBot        `json:"botUser"`
	AppService    *platformAppService `json:"appservice"`
}

type platformBot struct {
	Email    string  `json:"email"`
	Slug     string  `json:"slug"`
	Password *string `json:"password"`
}

type platformAppService struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// Reasons a TENANTS_B64 entry is skipped (the reason label of
// mxprobe_tenants_skipped).
const (
	// SkipEmptyID: the entry has no id. Every example the platform ships
	// has one ({"id":"","name":"Public"}): the public tenant, which has no bot.
	SkipEmptyID = "empty_id"
	// SkipNoBot: the entry has neither a botUser (top level or under
	// matrixConfig) nor a matrixConfig.appservice token; the platform
	// skips such tenants too (user-seed.service.ts).
	SkipNoBot = "no_bot"
	// SkipBadID: the id has characters other than the platform's (see
	// ValidTenantID); it would reach labels, alerts and chat messages.
	SkipBadID = "bad_id"
)

// SkipReasons lists every skip reason.
func SkipReasons() []string { return []string{SkipEmptyID, SkipNoBot, SkipBadID} }

// SkippedTenant is a TENANTS_B64 entry mxprobe cannot probe. It is reported
// once per configuration load, never fatal.
type SkippedTenant struct {
	Index  int    `json:"index"`
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason"`
}

// String describes the skipped entry for logs and check-config.
func (s SkippedTenant) String() string {
	switch s.Reason {
	case SkipEmptyID:
		return fmt.Sprintf("TENANTS_B64[%d] (name %q): skipped: empty id (a tenant without an id, such as the platform's public tenant, has no bot to probe)", s.Index, s.Name)
	case SkipBadID:
		return fmt.Sprintf("TENANTS_B64[%d] (id %q): skipped: %s", s.Index, s.ID, TenantIDRule)
	default:
		return fmt.Sprintf("TENANTS_B64[%d] (id %q): skipped: no bot (neither botUser nor matrixConfig.botUser nor matrixConfig.appservice.token)", s.Index, s.ID)
	}
}

// MaxTenantIDLength is the longest tenant id accepted (ids become label
// values, see probes/synapse's label cap).
const MaxTenantIDLength = 128

// TenantIDRule says which tenant ids are accepted.
const TenantIDRule = "a tenant id is 1 to 128 ASCII letters, digits, '.', '_' or '-'"

// ValidTenantID: id uses only what the platform's tenant ids use (its
// examples: "1", "testing", "acme"; ids are generated short alphanumeric
// strings), so that an id is inert in a Prometheus label, a Slack or Matrix
// message, a URL and a terminal.
func ValidTenantID(id string) bool {
	if id == "" || len(id) > MaxTenantIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ParseTenantsB64 decodes TENANTS_B64: base64 of a JSON array of the
// platform's tenant configs. Each problem is reported by tenant index and
// field name; values (passwords above all) are never echoed. Entries that
// cannot be probed (see ParseTenantsB64Skipped) are left out silently.
func ParseTenantsB64(value, botEmailDomain string) ([]Tenant, Errors) {
	out, _, errs := ParseTenantsB64Skipped(value, botEmailDomain)
	return out, errs
}

// ParseTenantsB64Skipped is ParseTenantsB64 that also returns the entries it
// skipped: an empty id, or neither a bot nor an appservice. Those are not
// errors: the platform ships such entries in every example.
func ParseTenantsB64Skipped(value, botEmailDomain string) ([]Tenant, []SkippedTenant, Errors) {
	raw, err := decodeBase64(value)
	if err != nil {
		return nil, nil, Errors{"TENANTS_B64: not valid base64 (" + err.Error() + ")"}
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, nil, Errors{"TENANTS_B64: decoded value is not a JSON array of tenants: " + jsonProblem(err)}
	}
	if botEmailDomain == "" {
		botEmailDomain = DefaultBotEmailDomain
	}
	var (
		out     []Tenant
		skipped []SkippedTenant
		errs    Errors
		seen    = map[string]int{}
	)
	for i, entry := range entries {
		where := fmt.Sprintf("TENANTS_B64[%d]", i)
		var pt platformTenant
		if err := json.Unmarshal(entry, &pt); err != nil {
			errs = append(errs, where+": "+jsonProblem(err))
			continue
		}
		if pt.ID == nil || strings.TrimSpace(*pt.ID) == "" {
			skipped = append(skipped, SkippedTenant{Index: i, Name: pt.Name, Reason: SkipEmptyID})
			continue
		}
		id := strings.TrimSpace(*pt.ID)
		if !ValidTenantID(id) {
			skipped = append(skipped, SkippedTenant{Index: i, ID: id, Name: pt.Name, Reason: SkipBadID})
			continue
		}
		where = fmt.Sprintf("TENANTS_B64[%d] (id %q)", i, id)
		if j, dup := seen[id]; dup {
			errs = append(errs, fmt.Sprintf("%s: id: duplicate of TENANTS_B64[%d]", where, j))
			continue
		}
		seen[id] = i
		// The current platform reads the bot from matrixConfig.botUser
		// (user-seed.service.ts); the July 2025 code read a top-level botUser.
		var bot *platformBot
		field := ""
		if pt.MatrixConfig != nil && pt.MatrixConfig.BotUser != nil {
			bot, field = pt.MatrixConfig.BotUser, "matrixConfig.botUser"
		} else if pt.BotUser != nil {
			bot, field = pt.BotUser, "botUser"
		}
		var as *platformAppService
		if pt.MatrixConfig != nil && pt.MatrixConfig.AppService != nil && pt.MatrixConfig.AppService.Token != "" {
			as = pt.MatrixConfig.AppService
		}
		if bot == nil && as == nil {
			skipped = append(skipped, SkippedTenant{Index: i, ID: id, Name: pt.Name, Reason: SkipNoBot})
			continue
		}
		t := Tenant{ID: id, Name: pt.Name}
		if bot != nil {
			if bot.Password == nil || *bot.Password == "" {
				errs = append(errs, where+": "+field+".password: missing")
				continue
			}
			t.Bot.User = bot.Slug
			// The platform lower-cases emails at login and its provider
			// compares login_hint to the stored (lower-case) email exactly.
			t.Bot.Email = strings.ToLower(strings.TrimSpace(bot.Email))
			t.Bot.Password = promcfg.Secret(*bot.Password)
			if t.Bot.User == "" {
				t.Bot.User = OpenMeetBotUserPrefix + id
			}
			if t.Bot.Email == "" {
				t.Bot.Email = strings.ToLower("bot-" + id + "@" + botEmailDomain)
			}
		} else {
			// Only an application service: its token, acting as its
			// sender (the id is the sender_localpart in the platform's
			// registration, openmeet-appservice.gomplate.yaml).
			t.Bot.Method = MethodAppService
			t.Bot.AccessToken = promcfg.Secret(as.Token)
			t.Bot.User = as.ID
		}
		if pt.MatrixConfig != nil {
			t.HomeserverURL = pt.MatrixConfig.HomeserverURL
			t.ServerName = pt.MatrixConfig.ServerName
		}
		t.line = -1 - i // negative: index into TENANTS_B64
		out = append(out, t)
	}
	return out, skipped, errs
}

// decodeBase64 is as lenient as Node's Buffer.from(s, "base64"), which the
// platform decodes TENANTS_B64 with (src/utils/tenant-config.ts): whitespace
// anywhere, padding optional, the standard and
// the URL-safe alphabet, even mixed. Surrounding quotes (an env file written
// with TENANTS_B64="...") are dropped too. Other characters are an error
// naming their position, rather than skipped silently.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		s = s[1 : len(s)-1]
	}
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\n', '\r', '\t', '\v', '\f':
			return -1
		case '-':
			return '+'
		case '_':
			return '/'
		}
		return r
	}, s)
	if i := strings.IndexByte(s, '='); i >= 0 {
		for j := i; j < len(s); j++ {
			if s[j] != '=' {
				return nil, fmt.Errorf("illegal data at byte %d", j)
			}
		}
		s = s[:i]
	}
	if len(s)%4 == 1 {
		return nil, fmt.Errorf("illegal data at byte %d", len(s)-1)
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("illegal data at byte %d", int64(ce))
		}
		return nil, err
	}
	return b, nil
}

// jsonProblem describes a JSON error without quoting the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("%s: expected %s, got %s", te.Field, te.Type, te.Value)
		}
		return fmt.Sprintf("expected %s, got %s", te.Type, te.Value)
	}
	if strings.Contains(err.Error(), "unexpected end of JSON input") {
		return "invalid JSON: unexpected end of input"
	}
	return "invalid JSON"
}
