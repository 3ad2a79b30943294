package auth

import "sync"

// MASCache is what the MAS logins learn and keep across configuration
// reloads: discovery documents (per homeserver and mas.public_url, with
// their TTL) and dynamic client registrations (per issuer and registration
// metadata, so a changed redirect_uri registers anew). It is safe for
// concurrent use; the daemon keeps one for its lifetime.
type MASCache struct {
	mu        sync.Mutex
	discovery map[string]discoveryEntry
	clients   map[string]string // issuer + registration metadata → client_id
}

// NewMASCache returns an empty cache.
func NewMASCache() *MASCache {
	return &MASCache{discovery: map[string]discoveryEntry{}, clients: map[string]string{}}
}

// Registrations is the number of client registrations held.
func (c *MASCache) Registrations() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.clients)
}
