package matrix

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/probes"
)

// NonceField carries the probe message's nonce in its content.
const NonceField = "org.mxprobe.nonce"

func newNonce() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// roomFilter is an inline /sync filter that shows only the messages of one
// room: no presence, account data, state or ephemeral events.
func roomFilter(room id.RoomID, limit int) string {
	none := map[string]any{"not_types": []string{"*"}}
	f := map[string]any{
		"presence":     none,
		"account_data": none,
		"room": map[string]any{
			"rooms":        []id.RoomID{room},
			"timeline":     map[string]any{"limit": limit, "types": []string{"m.room.message"}},
			"state":        map[string]any{"types": []string{}, "lazy_load_members": true},
			"ephemeral":    none,
			"account_data": none,
		},
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// freshFilter makes an inline filter unique: Synapse answers an identical
// /sync request (same user, device, since, timeout and filter) from a cache
// for two minutes (sync_response_cache_duration; rest/client/sync.py
// request_key), so room_message's position in its persistent room would be
// up to two minutes old and its sync step would time Synapse's cache, not
// its sync. Clients pass filters through unchanged; the nonce is an extra
// excluded presence type.
func freshFilter(filter string) string {
	var f map[string]any
	if json.Unmarshal([]byte(filter), &f) != nil {
		return filter
	}
	f["presence"] = map[string]any{"not_types": []string{"*", "mxprobe.nonce." + newNonce()}}
	b, _ := json.Marshal(f)
	return string(b)
}

// position is the step that gets a's current /sync position in room
// (next_batch), from which receive waits for the message.
func (r *runner) position(ctx context.Context, a *actor, room id.RoomID) (string, error) {
	var since string
	err := r.step(ctx, StepSync, a, func(ctx context.Context, cli *mautrix.Client) error {
		resp, err := cli.SyncRequest(ctx, 0, "", freshFilter(roomFilter(room, 1)), false, event.PresenceOffline)
		if err != nil {
			return err
		}
		if resp.NextBatch == "" {
			return probes.Errorf(probes.ClassBadResponse, "sync answered without next_batch")
		}
		since = resp.NextBatch
		return nil
	})
	return since, err
}

// emptySyncPause is how long receive waits after an empty /sync answer that
// came back at once although a long poll was asked for.
const emptySyncPause = 100 * time.Millisecond

// receive is the step that long-polls a's /sync from since until a message
// of room carries nonce, and records the delivery latency counted from sent
// (the start of the send request) to the sync answer that carried it.
func (r *runner) receive(ctx context.Context, a *actor, room id.RoomID, since, nonce string, sent time.Time, syncTimeout time.Duration) error {
	filter := roomFilter(room, 50)
	var delivered time.Time
	err := r.step(ctx, StepReceive, a, func(ctx context.Context, cli *mautrix.Client) error {
		for {
			timeout := syncTimeout
			if dl, ok := ctx.Deadline(); ok {
				// Leave time for the answer to come back before the deadline.
				timeout = min(timeout, time.Until(dl)-500*time.Millisecond)
			}
			if timeout < 0 {
				timeout = 0
			}
			asked := time.Now()
			resp, err := cli.SyncRequest(ctx, int(timeout/time.Millisecond), since, filter, false, event.PresenceOffline)
			if err != nil {
				return err
			}
			at := time.Now()
			jr := resp.Rooms.Join[room]
			if (jr == nil || len(jr.Timeline.Events) == 0) && at.Sub(asked) < 50*time.Millisecond {
				// An empty answer at once: the server does not long-poll (or
				// the deadline left no time to ask it to). Pause instead of
				// hammering it.
				select {
				case <-ctx.Done():
				case <-time.After(emptySyncPause):
				}
			}
			if jr != nil {
				for _, evt := range jr.Timeline.Events {
					if evt != nil && evt.Content.Raw[NonceField] == nonce {
						delivered = at
						return nil
					}
				}
			}
			if resp.NextBatch != "" {
				since = resp.NextBatch
			}
			if err := ctx.Err(); err != nil {
				return probes.WithClass(probes.Classify(err), err)
			}
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 100*time.Millisecond {
				return probes.Errorf(probes.ClassTimeout, "the message did not arrive through /sync before the deadline")
			}
		}
	})
	if err == nil {
		r.rec.Signal(probes.SignalDeliverySeconds, delivered.Sub(sent).Seconds())
	}
	return err
}

// sendNonce sends a notice carrying nonce into room as a, with a transaction
// id derived from the nonce (a retry after 429 is idempotent). It returns
// the start of the last request, from which delivery is measured.
func sendNonce(ctx context.Context, cli *mautrix.Client, room id.RoomID, nonce string, sent *time.Time) error {
	*sent = time.Now()
	_, err := cli.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{
		"msgtype":  "m.notice",
		"body":     "mxprobe probe message " + nonce,
		NonceField: nonce,
	}, mautrix.ReqSendEvent{TransactionID: "mxprobe-" + nonce})
	return err
}
