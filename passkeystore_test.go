package main

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// TestEnginePasskeyCeremonies pins the ceremony store on every engine: a
// ceremony is taken once, not after its expiry, not under a key whose
// expiry was changed, and no more than the limit are under way, expired
// ones not counted.
func TestEnginePasskeyCeremonies(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		put := func(c passkeyCeremony, limit int) (string, ceremonyKey, error) {
			t.Helper()
			id, k, err := newCeremonyID(c.Expires)
			if err != nil {
				t.Fatal(err)
			}
			return id, k, st.PutPasskeyCeremony(k, c, now, limit)
		}
		if _, err := st.TakePasskeyCeremony(ceremonyKey{}, now); !errors.Is(err, errNotFound) {
			t.Fatalf("TakePasskeyCeremony on a store with none = %v; want errNotFound", err)
		}
		c := passkeyCeremony{Kind: ceremonyRegister, User: 7, Session: "s", Name: "laptop", Expires: now.Add(passkeyCeremonyWait)}
		c.Data.Challenge = "challenge-1"
		id, k, err := put(c, 10)
		if err != nil {
			t.Fatalf("PutPasskeyCeremony: %v", err)
		}
		if pk, ok := parseCeremonyID(id); !ok || pk != k || !pk.expires().Equal(c.Expires) {
			t.Fatalf("parseCeremonyID(%q) = %x, %t; want the key %x expiring %v", id, pk, ok, k, c.Expires)
		}
		got, err := st.TakePasskeyCeremony(k, now.Add(time.Minute))
		if err != nil || got.Kind != ceremonyRegister || got.User != 7 || got.Session != "s" || got.Name != "laptop" || got.Data.Challenge != "challenge-1" || !got.Expires.Equal(c.Expires) {
			t.Fatalf("TakePasskeyCeremony = %+v, %v; want the ceremony put", got, err)
		}
		if _, err := st.TakePasskeyCeremony(k, now.Add(time.Minute)); !errors.Is(err, errNotFound) {
			t.Fatalf("a second TakePasskeyCeremony = %v; want errNotFound (single use)", err)
		}

		// Two takes at once: one gets it.
		_, k, _ = put(c, 10)
		var wg sync.WaitGroup
		var mu sync.Mutex
		got2 := 0
		for range 2 {
			wg.Go(func() {
				if _, err := st.TakePasskeyCeremony(k, now); err == nil {
					mu.Lock()
					got2++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if got2 != 1 {
			t.Errorf("two takes at once: %d got the ceremony; want 1", got2)
		}

		// Expired: gone, and taken out all the same.
		_, k, _ = put(c, 10)
		if _, err := st.TakePasskeyCeremony(k, c.Expires); !errors.Is(err, errNotFound) {
			t.Errorf("TakePasskeyCeremony at its expiry = %v; want errNotFound", err)
		}
		// An id whose expiry was changed names nothing.
		id, _, _ = put(c, 10)
		b, _ := b64u.DecodeString(id)
		b[7]++
		if forged, ok := parseCeremonyID(b64u.EncodeToString(b)); !ok {
			t.Fatal("parseCeremonyID refused an id of the right shape")
		} else if _, err := st.TakePasskeyCeremony(forged, now); !errors.Is(err, errNotFound) {
			t.Errorf("TakePasskeyCeremony with the expiry changed = %v; want errNotFound", err)
		}
		for _, bad := range []string{"", "short", id + "x", "!" + id[1:]} {
			if _, ok := parseCeremonyID(bad); ok {
				t.Errorf("parseCeremonyID(%q) = ok; want refused", bad)
			}
		}

		// The limit: one is under way (the one above); three more fit
		// under 4, the next is refused; once they expire, there is room.
		for i := range 3 {
			if _, _, err := put(c, 4); err != nil {
				t.Fatalf("put %d under the limit: %v", i, err)
			}
		}
		if _, _, err := put(c, 4); !errors.Is(err, errTooManyCeremonies) {
			t.Fatalf("put past the limit = %v; want errTooManyCeremonies", err)
		}
		now = c.Expires
		later := c
		later.Expires = now.Add(passkeyCeremonyWait)
		for i := range 4 {
			if _, _, err := put(later, 4); err != nil {
				t.Fatalf("put %d after the others expired: %v", i, err)
			}
		}
	})
}
