package config

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv/fuzzmut"
)

// b64Secret is the recognisable password the TENANTS_B64 seeds carry; no
// error may ever show it, whatever the rest of the input looks like.
const b64Secret = "pw-B64-SEKRIT-7f3a"

func tenantsB64Seeds() []string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.StdEncoding.EncodeToString(b)
	}
	return []string{
		enc([]map[string]any{{"id": "t1", "name": "One", "botUser": map[string]any{"email": "b@x.org", "slug": "bot-one", "password": b64Secret}}}),
		enc([]map[string]any{{"id": "t2", "matrixConfig": map[string]any{"homeserverUrl": "http://hs", "serverName": "hs",
			"botUser": map[string]any{"password": b64Secret}}}}),
		enc([]map[string]any{{"id": "t3", "botUser": map[string]any{"password": 12}}, {"id": "t3", "botUser": map[string]any{"password": b64Secret}}}),
		enc([]map[string]any{{"botUser": map[string]any{"password": b64Secret}}, {"id": " ", "matrixConfig": nil}}),
		base64.RawURLEncoding.EncodeToString([]byte(`[{"id":"u","botUser":{"password":"` + b64Secret + `"}}]`)),
		enc([]map[string]any{{"id": "", "name": "Public"}, {"id": "as", "matrixConfig": map[string]any{"homeserverUrl": "http://hs",
			"appservice": map[string]any{"id": "svc", "token": b64Secret, "hsToken": b64Secret}}}, {"id": "nb", "matrixConfig": map[string]any{"serverName": "hs"}}}),
		"", "!!!", "W10=", "e30=", "bnVsbA==",
	}
}

// passwordsIn finds the password values a TENANTS_B64 value carries, if it
// decodes at all.
func passwordsIn(value string) (pw []string, ids []string) {
	raw, err := decodeBase64(value)
	if err != nil {
		return nil, nil
	}
	var entries []struct {
		ID      any `json:"id"`
		BotUser *struct {
			Password any `json:"password"`
		} `json:"botUser"`
		MatrixConfig *struct {
			BotUser *struct {
				Password any `json:"password"`
			} `json:"botUser"`
			AppService *struct {
				Token   any `json:"token"`
				HSToken any `json:"hsToken"`
			} `json:"appservice"`
		} `json:"matrixConfig"`
	}
	if json.Unmarshal(raw, &entries) != nil {
		// Not a well-formed array: look for any string value instead.
		return nil, nil
	}
	for _, e := range entries {
		if s, ok := e.ID.(string); ok {
			ids = append(ids, s)
		}
		if e.BotUser != nil {
			if s, ok := e.BotUser.Password.(string); ok {
				pw = append(pw, s)
			}
		}
		if e.MatrixConfig != nil && e.MatrixConfig.AppService != nil {
			for _, v := range []any{e.MatrixConfig.AppService.Token, e.MatrixConfig.AppService.HSToken} {
				if s, ok := v.(string); ok {
					pw = append(pw, s)
				}
			}
		}
		if e.MatrixConfig != nil && e.MatrixConfig.BotUser != nil {
			if s, ok := e.MatrixConfig.BotUser.Password.(string); ok {
				pw = append(pw, s)
			}
		}
	}
	return pw, ids
}

// checkTenantsB64 is the body of FuzzParseTenantsB64: no panic, every
// problem reported with its TENANTS_B64 location, passwords never echoed,
// and the tenants that parse carry their password as a Secret.
func checkTenantsB64(t *testing.T, value string) {
	tenants, errs := ParseTenantsB64(value, "")
	pws, ids := passwordsIn(value)
	pws = append(pws, b64Secret)
	for _, e := range errs {
		if !strings.HasPrefix(e, "TENANTS_B64") {
			t.Errorf("error does not say where: %q", e)
		}
		for _, p := range pws {
			if len(p) < 8 || containsAny(ids, p) || strings.Contains(messageWords, p) {
				continue // cannot be told apart from the message itself
			}
			if strings.Contains(e, p) {
				t.Errorf("error echoes a password: %q", e)
			}
		}
	}
	seen := map[string]bool{}
	for _, tn := range tenants {
		appservice := tn.Bot.Method == MethodAppService && tn.Bot.AccessToken != ""
		if tn.ID == "" || (!appservice && (tn.Bot.Password == "" || tn.Bot.User == "" || tn.Bot.Email == "")) {
			t.Errorf("tenant accepted without id, user, email or password: %+v", tn)
		}
		if seen[tn.ID] {
			t.Errorf("duplicate tenant %q accepted", tn.ID)
		}
		seen[tn.ID] = true
		if b, _ := json.Marshal(tn.Bot); strings.Contains(string(b), string(tn.Bot.Password)) && len(tn.Bot.Password) >= 8 {
			t.Errorf("tenant bot marshals its password: %s", b)
		}
		if b, _ := json.Marshal(tn.Bot); strings.Contains(string(b), string(tn.Bot.AccessToken)) && len(tn.Bot.AccessToken) >= 8 {
			t.Errorf("tenant bot marshals its appservice token: %s", b)
		}
	}
}

// messageWords are the fixed words of ParseTenantsB64's messages; a fuzzed
// "password" made of them proves nothing when it shows up in one.
const messageWords = "TENANTS_B64: not valid base64 (illegal data at byte) decoded value is not a JSON array of tenants " +
	"invalid JSON at byte: unexpected end of input expected got id: missing duplicate of botUser: missing " +
	"(expected at the top level or under matrixConfig) matrixConfig.botUser.password: missing"

func containsAny(list []string, s string) bool {
	for _, v := range list {
		if strings.Contains(v, s) {
			return true
		}
	}
	return false
}

func FuzzParseTenantsB64(f *testing.F) {
	for _, s := range tenantsB64Seeds() {
		f.Add(s)
	}
	f.Fuzz(checkTenantsB64)
}

// TestFuzzParseTenantsB64Short runs the fuzz body over mutations of the
// seeds (raw base64 mutated, and the decoded JSON mutated then re-encoded, so
// the JSON layer is reached too).
func TestFuzzParseTenantsB64Short(t *testing.T) {
	var seeds [][]byte
	for _, s := range tenantsB64Seeds() {
		seeds = append(seeds, []byte(s))
	}
	fuzzmut.Run(t, seeds, fuzzmut.Options{Iterations: 1500, Seed: 11}, func(t *testing.T, b []byte) {
		checkTenantsB64(t, string(b))
	})
	var jsonSeeds [][]byte
	for _, s := range tenantsB64Seeds() {
		if raw, err := decodeBase64(s); err == nil {
			jsonSeeds = append(jsonSeeds, raw)
		}
	}
	fuzzmut.Run(t, jsonSeeds, fuzzmut.Options{Iterations: 3000, Seed: 12}, func(t *testing.T, b []byte) {
		checkTenantsB64(t, base64.StdEncoding.EncodeToString(b))
	})
}

// checkParse is FuzzParse's contract plus: errors name where they come from,
// passwords from TENANTS_B64 are never echoed, whatever the YAML.
func checkParse(t *testing.T, data []byte, tenants string) {
	cfg, err := parse(data, "f.yml", envOf(map[string]string{"TENANTS_B64": tenants}))
	if (err == nil) == (cfg == nil) {
		t.Fatalf("Parse returned config %v and error %v", cfg != nil, err)
	}
	if err != nil {
		msg := err.Error()
		if msg == "" {
			t.Fatal("empty error")
		}
		if strings.Contains(msg, b64Secret) {
			t.Fatalf("error echoes a TENANTS_B64 password: %q", msg)
		}
	}
}

// TestFuzzParseShort mutates real configuration files (the good example and
// the bad one) for the config YAML fuzz body, with TENANTS_B64 set.
func TestFuzzParseShort(t *testing.T) {
	var seeds [][]byte
	for _, f := range []string{"testdata/good.yml", "testdata/bad.yml", "testdata/openmeet/mxprobe.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	seeds = append(seeds, []byte("global:\n  concurrency: 3\n"), []byte("tenants: [{id: a}]"))
	b64 := tenantsB64Seeds()[0]
	fuzzmut.Run(t, seeds, fuzzmut.Options{Iterations: 2000, Seed: 13}, func(t *testing.T, b []byte) {
		checkParse(t, b, b64)
	})
}
