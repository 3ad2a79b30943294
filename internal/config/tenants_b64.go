package config

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	promcfg "github.com/prometheus/common/config"
)

// platformTenant is the part of the platform's tenant config mxprobe reads.
// Every other field (OAuth client settings, admin users, appservice tokens...)
// is ignored and never logged.
type platformTenant struct {
	ID           *string             `json:"id"`
	Name         string              `json:"name"`
	BotUser      *platformBot        `json:"botUser"`
	MatrixConfig *platformMatrixConf `json:"matrixConfig"`
}

type platformMatrixConf struct {
	HomeserverURL string       `json:"homeserverUrl"`
	ServerName    string       `json:"serverName"`
	BotUser       *platformBot `json:"botUser"`
}

type platformBot struct {
	Email    string  `json:"email"`
	Slug     string  `json:"slug"`
	Password *string `json:"password"`
}

// ParseTenantsB64 decodes TENANTS_B64: base64 of a JSON array of the
// platform's tenant configs. Each problem is reported by tenant index and
// field name; values (passwords above all) are never echoed.
func ParseTenantsB64(value, botEmailDomain string) ([]Tenant, Errors) {
	raw, err := decodeBase64(value)
	if err != nil {
		return nil, Errors{"TENANTS_B64: not valid base64 (" + err.Error() + ")"}
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, Errors{"TENANTS_B64: decoded value is not a JSON array of tenants: " + jsonProblem(err)}
	}
	if botEmailDomain == "" {
		botEmailDomain = DefaultBotEmailDomain
	}
	var (
		out  []Tenant
		errs Errors
		seen = map[string]int{}
	)
	for i, entry := range entries {
		where := fmt.Sprintf("TENANTS_B64[%d]", i)
		var pt platformTenant
		if err := json.Unmarshal(entry, &pt); err != nil {
			errs = append(errs, where+": "+jsonProblem(err))
			continue
		}
		if pt.ID == nil || strings.TrimSpace(*pt.ID) == "" {
			errs = append(errs, where+": id: missing")
			continue
		}
		id := strings.TrimSpace(*pt.ID)
		where = fmt.Sprintf("TENANTS_B64[%d] (id %q)", i, id)
		if j, dup := seen[id]; dup {
			errs = append(errs, fmt.Sprintf("%s: id: duplicate of TENANTS_B64[%d]", where, j))
			continue
		}
		seen[id] = i
		bot, field := pt.BotUser, "botUser"
		if bot == nil && pt.MatrixConfig != nil {
			bot, field = pt.MatrixConfig.BotUser, "matrixConfig.botUser"
		}
		if bot == nil {
			errs = append(errs, where+": botUser: missing (expected at the top level or under matrixConfig)")
			continue
		}
		if bot.Password == nil || *bot.Password == "" {
			errs = append(errs, where+": "+field+".password: missing")
			continue
		}
		t := Tenant{ID: id, Name: pt.Name}
		t.Bot.Method = ""
		t.Bot.User = bot.Slug
		t.Bot.Email = bot.Email
		t.Bot.Password = promcfg.Secret(*bot.Password)
		if t.Bot.User == "" {
			t.Bot.User = "openmeet-bot-" + id
		}
		if t.Bot.Email == "" {
			t.Bot.Email = "bot-" + id + "@" + botEmailDomain
		}
		if pt.MatrixConfig != nil {
			t.HomeserverURL = pt.MatrixConfig.HomeserverURL
			t.ServerName = pt.MatrixConfig.ServerName
		}
		t.line = -1 - i // negative: index into TENANTS_B64
		out = append(out, t)
	}
	return out, errs
}

func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, s)
	var firstErr error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	var ce base64.CorruptInputError
	if errors.As(firstErr, &ce) {
		return nil, fmt.Errorf("illegal data at byte %d", int64(ce))
	}
	return nil, firstErr
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
