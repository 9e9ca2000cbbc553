package main

import (
	"errors"
	"testing"
	"time"
)

// TestFormOnceBounds checks what formOnce keeps: a failed form leaves its
// key free, a secret waits secretWait at most, each session remembers at
// most formKeysPerSession keys, and the sessions it remembers are bounded,
// those idle longest forgotten first.
func TestFormOnceBounds(t *testing.T) {
	f := newFormOnce()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	made := func(secret string) func() (newSecret, error) {
		return func() (newSecret, error) { return newSecret{secret: secret}, nil }
	}
	a := sessionHash{1}

	if ran, err := f.once(a, "K1", now, func() (newSecret, error) { return newSecret{}, errors.New("bad form") }); !ran || err == nil {
		t.Fatalf("a failing form = %v, %v; want it run, with its error", ran, err)
	}
	if ran, _ := f.once(a, "K1", now, made("s1")); !ran {
		t.Fatal("the key of a failed form was used up; want it free")
	}
	if ran, _ := f.once(a, "K1", now, made("again")); ran {
		t.Fatal("a used key ran its form again")
	}
	if s := f.take(sessionHash{2}, now, false); s != nil {
		t.Fatal("another session took the secret")
	}
	if s := f.take(a, now, true); s == nil || s.secret != "s1" {
		t.Fatalf("peek = %v; want s1", s)
	}
	if s := f.take(a, now, false); s == nil || s.secret != "s1" {
		t.Fatalf("take = %v; want s1", s)
	}
	if s := f.take(a, now, false); s != nil {
		t.Fatal("a secret was taken twice")
	}
	f.once(a, "K2", now, made("s2"))
	if s := f.take(a, now.Add(secretWait), false); s != nil {
		t.Fatal("a secret was still shown after secretWait")
	}

	for i := range formKeysPerSession + 10 {
		f.once(a, newFormKey(), now, made("x"))
		if n := len(f.sessions[a].keys); n > formKeysPerSession {
			t.Fatalf("after %d forms a session holds %d keys; want at most %d", i+1, n, formKeysPerSession)
		}
	}

	for i := range formSessions + 100 {
		var h sessionHash
		h[0], h[1], h[2] = byte(i), byte(i>>8), 0xff
		f.once(h, "K", now.Add(time.Duration(i)*time.Millisecond), made("y"))
	}
	if n := len(f.sessions); n > formSessions {
		t.Errorf("formOnce holds %d sessions; want at most %d", n, formSessions)
	}
	if _, ok := f.sessions[a]; ok {
		t.Errorf("the session idle longest is still held")
	}
}
