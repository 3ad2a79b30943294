// Package fakehs is an in-process homeserver stand-in (httptest) that
// answers just enough of the client-server API for a room round trip:
// versions, password login, logout, whoami, createRoom, invite, join, send,
// /sync (with since and long-poll), state, leave, forget, joined_rooms and
// the display name. It keeps everything in memory and does no real
// authorisation beyond access tokens and membership; it exists for
// benchmarks and fault tests that must not depend on a real server's speed.
//
// It is used by tests only, never by the daemon.
package fakehs

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is a running stand-in.
type Server struct {
	URL        string
	ServerName string
	// Latency, when set, delays every answer (a stand-in for a real
	// server's processing time). Set it before the first request.
	Latency time.Duration

	srv *httptest.Server

	mu       sync.Mutex
	users    map[string]string // user id → password
	names    map[string]string // user id → display name
	tokens   map[string]string // token → user id
	rooms    map[string]*room
	pos      int64         // stream position of the last event
	wake     chan struct{} // closed and replaced when an event arrives
	closed   chan struct{}
	requests map[string]int
}

type room struct {
	id      string
	members map[string]string // user id → join / invite / leave
	state   map[string]json.RawMessage
	events  []evt
}

type evt struct {
	pos  int64
	body json.RawMessage
}

// New starts a stand-in for server name name (default "localhost").
func New(name string) *Server {
	if name == "" {
		name = "localhost"
	}
	s := &Server{
		ServerName: name,
		users:      map[string]string{}, names: map[string]string{}, tokens: map[string]string{},
		rooms: map[string]*room{}, wake: make(chan struct{}), closed: make(chan struct{}),
		requests: map[string]int{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server, ending long-polls.
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Handler serves the stand-in's API, for a caller that listens on ports
// of its own (internal/tools/standin gives each mxprobe replica one).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// UserOf returns the user id an access token belongs to ("" when none).
func (s *Server) UserOf(token string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens[token]
}

// AddUser creates an account.
func (s *Server) AddUser(localpart, password, displayName string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	uid := "@" + localpart + ":" + s.ServerName
	s.users[uid] = password
	s.names[uid] = displayName
	return uid
}

// Token logs a user in directly and returns a new access token.
func (s *Server) Token(localpart string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newToken("@" + localpart + ":" + s.ServerName)
}

// JoinedRooms lists the rooms a user is joined to.
func (s *Server) JoinedRooms(localpart string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	uid := "@" + localpart + ":" + s.ServerName
	var out []string
	for id, r := range s.rooms {
		if r.members[uid] == "join" {
			out = append(out, id)
		}
	}
	return out
}

// Requests returns how many requests each endpoint got ("POST createRoom").
func (s *Server) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

func (s *Server) newToken(uid string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	t := "fake_" + hex.EncodeToString(b)
	s.tokens[t] = uid
	return t
}

func (s *Server) newRoomID() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return "!" + hex.EncodeToString(b) + ":" + s.ServerName
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func mxErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"errcode": code, "error": msg})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.Latency > 0 {
		t := time.NewTimer(s.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	path := r.URL.Path
	const prefix = "/_matrix/client/"
	if path == prefix+"versions" {
		writeJSON(w, 200, map[string]any{"versions": []string{"v1.1", "v1.2"}})
		return
	}
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		mxErr(w, 404, "M_UNRECOGNIZED", "unknown endpoint")
		return
	}
	// Drop the version segment (v3, r0).
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[i+1:]
	}
	parts := strings.Split(rest, "/")
	var body map[string]any
	if r.Body != nil && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
			mxErr(w, 400, "M_NOT_JSON", "bad JSON")
			return
		}
	}
	s.mu.Lock()
	s.requests[r.Method+" "+endpointName(parts)]++
	s.mu.Unlock()

	if parts[0] == "login" && r.Method == http.MethodPost {
		s.login(w, body)
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	uid, ok := s.tokens[tok]
	s.mu.Unlock()
	if !ok {
		mxErr(w, 401, "M_UNKNOWN_TOKEN", "Unknown access token")
		return
	}
	switch {
	case parts[0] == "logout":
		s.mu.Lock()
		delete(s.tokens, tok)
		s.mu.Unlock()
		writeJSON(w, 200, map[string]any{})
	case parts[0] == "account" && len(parts) > 1 && parts[1] == "whoami":
		writeJSON(w, 200, map[string]any{"user_id": uid, "device_id": "FAKEDEVICE"})
	case parts[0] == "createRoom":
		s.createRoom(w, uid, body)
	case parts[0] == "joined_rooms":
		s.mu.Lock()
		var out []string
		for id, rm := range s.rooms {
			if rm.members[uid] == "join" {
				out = append(out, id)
			}
		}
		s.mu.Unlock()
		writeJSON(w, 200, map[string]any{"joined_rooms": out})
	case parts[0] == "sync":
		s.sync(w, r, uid)
	case parts[0] == "profile" && len(parts) >= 2:
		s.mu.Lock()
		name, ok := s.names[parts[1]]
		s.mu.Unlock()
		if !ok {
			mxErr(w, 404, "M_NOT_FOUND", "no such user")
			return
		}
		writeJSON(w, 200, map[string]any{"displayname": name})
	case parts[0] == "rooms" && len(parts) >= 3:
		s.roomOp(w, r, uid, parts[1], parts[2:], body)
	case parts[0] == "join" && len(parts) >= 2:
		s.roomOp(w, r, uid, parts[1], []string{"join"}, body)
	default:
		mxErr(w, 404, "M_UNRECOGNIZED", "unknown endpoint")
	}
}

func endpointName(parts []string) string {
	if parts[0] == "rooms" && len(parts) >= 3 {
		return parts[2]
	}
	return parts[0]
}

func (s *Server) login(w http.ResponseWriter, body map[string]any) {
	ident, _ := body["identifier"].(map[string]any)
	user, _ := ident["user"].(string)
	if user == "" {
		user, _ = body["user"].(string)
	}
	pw, _ := body["password"].(string)
	uid := user
	if !strings.HasPrefix(uid, "@") {
		uid = "@" + user + ":" + s.ServerName
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if want, ok := s.users[uid]; !ok || want != pw {
		mxErr(w, 403, "M_FORBIDDEN", "Invalid username or password")
		return
	}
	dev, _ := body["device_id"].(string)
	if dev == "" {
		dev = "FAKEDEVICE"
	}
	writeJSON(w, 200, map[string]any{"user_id": uid, "access_token": s.newToken(uid), "device_id": dev})
}

// appendEvent adds an event to rm and wakes long-polls. Call with s.mu held.
func (s *Server) appendEvent(rm *room, typ, sender string, stateKey *string, content any) string {
	s.pos++
	eid := fmt.Sprintf("$fake%d", s.pos)
	e := map[string]any{
		"type": typ, "sender": sender, "content": content, "event_id": eid,
		"origin_server_ts": time.Now().UnixMilli(), "room_id": rm.id,
	}
	if stateKey != nil {
		e["state_key"] = *stateKey
		c, _ := json.Marshal(content)
		rm.state[typ+"\x00"+*stateKey] = c
	}
	b, _ := json.Marshal(e)
	rm.events = append(rm.events, evt{pos: s.pos, body: b})
	close(s.wake)
	s.wake = make(chan struct{})
	return eid
}

func (s *Server) createRoom(w http.ResponseWriter, uid string, body map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rm := &room{id: s.newRoomID(), members: map[string]string{}, state: map[string]json.RawMessage{}}
	s.rooms[rm.id] = rm
	empty := ""
	create := map[string]any{"creator": uid, "room_version": "10"}
	if cc, ok := body["creation_content"].(map[string]any); ok {
		for k, v := range cc {
			create[k] = v
		}
	}
	s.appendEvent(rm, "m.room.create", uid, &empty, create)
	rm.members[uid] = "join"
	s.appendEvent(rm, "m.room.member", uid, &uid, map[string]any{"membership": "join"})
	s.appendEvent(rm, "m.room.power_levels", uid, &empty, map[string]any{
		"users": map[string]any{uid: 100}, "users_default": 0, "events_default": 0, "state_default": 50,
	})
	if name, ok := body["name"].(string); ok {
		s.appendEvent(rm, "m.room.name", uid, &empty, map[string]any{"name": name})
	}
	if states, ok := body["initial_state"].([]any); ok {
		for _, st := range states {
			m, _ := st.(map[string]any)
			typ, _ := m["type"].(string)
			sk, _ := m["state_key"].(string)
			if typ != "" {
				s.appendEvent(rm, typ, uid, &sk, m["content"])
			}
		}
	}
	writeJSON(w, 200, map[string]any{"room_id": rm.id})
}

func (s *Server) roomOp(w http.ResponseWriter, r *http.Request, uid, roomID string, op []string, body map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rm, ok := s.rooms[roomID]
	if !ok {
		mxErr(w, 404, "M_NOT_FOUND", "unknown room")
		return
	}
	membership := rm.members[uid]
	switch op[0] {
	case "invite":
		target, _ := body["user_id"].(string)
		if membership != "join" {
			mxErr(w, 403, "M_FORBIDDEN", "not in room")
			return
		}
		rm.members[target] = "invite"
		s.appendEvent(rm, "m.room.member", uid, &target, map[string]any{"membership": "invite"})
		writeJSON(w, 200, map[string]any{})
	case "join":
		if membership != "invite" && membership != "join" {
			mxErr(w, 403, "M_FORBIDDEN", "not invited")
			return
		}
		rm.members[uid] = "join"
		s.appendEvent(rm, "m.room.member", uid, &uid, map[string]any{"membership": "join"})
		writeJSON(w, 200, map[string]any{"room_id": rm.id})
	case "leave":
		if membership != "join" && membership != "invite" {
			mxErr(w, 403, "M_FORBIDDEN", "not in room")
			return
		}
		rm.members[uid] = "leave"
		s.appendEvent(rm, "m.room.member", uid, &uid, map[string]any{"membership": "leave"})
		writeJSON(w, 200, map[string]any{})
	case "forget":
		if membership == "join" {
			mxErr(w, 400, "M_UNKNOWN", "leave first")
			return
		}
		delete(rm.members, uid)
		if len(rm.members) == 0 {
			delete(s.rooms, roomID)
		}
		writeJSON(w, 200, map[string]any{})
	case "send":
		if membership != "join" {
			mxErr(w, 403, "M_FORBIDDEN", "User not in room")
			return
		}
		if len(op) < 2 {
			mxErr(w, 400, "M_UNRECOGNIZED", "event type missing")
			return
		}
		eid := s.appendEvent(rm, op[1], uid, nil, body)
		writeJSON(w, 200, map[string]any{"event_id": eid})
	case "state":
		if membership != "join" {
			mxErr(w, 403, "M_FORBIDDEN", "not in room")
			return
		}
		key := ""
		if len(op) >= 3 {
			key = op[2]
		}
		if len(op) < 2 {
			mxErr(w, 400, "M_UNRECOGNIZED", "event type missing")
			return
		}
		c, ok := rm.state[op[1]+"\x00"+key]
		if !ok {
			mxErr(w, 404, "M_NOT_FOUND", "no such state event")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(c)
	default:
		mxErr(w, 404, "M_UNRECOGNIZED", "unknown room endpoint")
	}
}

// sync answers the timeline events after since in the rooms the user is
// joined to (limited to the filter's rooms when it names them), waiting up
// to timeout ms for one to arrive. Invitations come with their stripped
// name. No since: the latest position, with the last events of each room.
func (s *Server) sync(w http.ResponseWriter, r *http.Request, uid string) {
	q := r.URL.Query()
	since, _ := strconv.ParseInt(strings.TrimPrefix(q.Get("since"), "s"), 10, 64)
	timeout, _ := strconv.Atoi(q.Get("timeout"))
	var only map[string]bool
	if f := q.Get("filter"); strings.HasPrefix(f, "{") {
		var filt struct {
			Room struct {
				Rooms []string `json:"rooms"`
			} `json:"room"`
		}
		if json.Unmarshal([]byte(f), &filt) == nil && filt.Room.Rooms != nil {
			only = map[string]bool{}
			for _, id := range filt.Room.Rooms {
				only[id] = true
			}
		}
	}
	deadline := time.NewTimer(time.Duration(timeout) * time.Millisecond)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		join, invite := map[string]any{}, map[string]any{}
		for id, rm := range s.rooms {
			if only != nil && !only[id] {
				continue
			}
			switch rm.members[uid] {
			case "join":
				var evs []json.RawMessage
				for _, e := range rm.events {
					if e.pos > since {
						evs = append(evs, e.body)
					}
				}
				if since == 0 && len(evs) > 1 {
					evs = evs[len(evs)-1:]
				}
				if len(evs) > 0 {
					join[id] = map[string]any{"timeline": map[string]any{"events": evs}}
				}
			case "invite":
				if since == 0 {
					var stripped []any
					if c, ok := rm.state["m.room.name\x00"]; ok {
						stripped = append(stripped, map[string]any{"type": "m.room.name", "state_key": "", "content": c})
					}
					invite[id] = map[string]any{"invite_state": map[string]any{"events": stripped}}
				}
			}
		}
		pos, wake := s.pos, s.wake
		s.mu.Unlock()
		if len(join) > 0 || len(invite) > 0 || since == 0 {
			writeJSON(w, 200, map[string]any{"next_batch": "s" + strconv.FormatInt(pos, 10),
				"rooms": map[string]any{"join": join, "invite": invite}})
			return
		}
		since = pos
		select {
		case <-wake:
		case <-deadline.C:
			writeJSON(w, 200, map[string]any{"next_batch": "s" + strconv.FormatInt(pos, 10), "rooms": map[string]any{}})
			return
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		}
	}
}
