package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestEngineSecondFactors pins the second-factor store of the contract:
// TOTP enrolment and its steps, recovery codes used once and replaced,
// passkeys added, found, renamed, used and deleted, recovery codes going
// with the last factor, the reset ending sessions, and a deleted user's
// factors going with them.
func TestEngineSecondFactors(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := storeUser(t, st, "alice", false)
		bob := storeUser(t, st, "bob", false)
		now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		by := actor{ID: alice.ID, Name: alice.Name, Via: "page"}
		codes := func(prefix string) []tokenHash {
			var out []tokenHash
			for i := range recoveryCodeCount {
				out = append(out, sha256.Sum256([]byte{prefix[0], byte(i)}))
			}
			return out
		}
		factors := func(u userRecord) secondFactors {
			t.Helper()
			f, err := st.SecondFactors(u.ID)
			if err != nil {
				t.Fatalf("SecondFactors(%s): %v", u.Name, err)
			}
			return f
		}

		if f := factors(alice); f.any() || f.RecoveryLeft != 0 {
			t.Errorf("a new user holds %+v; want nothing", f)
		}
		if _, err := st.SecondFactors(999); !errors.Is(err, errNotFound) {
			t.Errorf("SecondFactors(unknown) = %v; want errNotFound", err)
		}
		if _, err := st.TOTPOf(alice.ID); !errors.Is(err, errNotFound) {
			t.Errorf("TOTPOf before enrolment = %v; want errNotFound", err)
		}
		if err := st.ReplaceRecoveryCodes(by, alice.ID, codes("a")); !errors.Is(err, errNotFound) {
			t.Errorf("ReplaceRecoveryCodes with no factor = %v; want errNotFound", err)
		}

		sealed := []byte("sealed secret bytes")
		if err := st.EnrolTOTP(by, alice.ID, totpRecord{Sealed: sealed, LastStep: 100, CreatedAt: now}, codes("a")); err != nil {
			t.Fatalf("EnrolTOTP: %v", err)
		}
		if err := st.EnrolTOTP(by, alice.ID, totpRecord{Sealed: sealed}, nil); !errors.Is(err, errTOTPEnrolled) {
			t.Errorf("EnrolTOTP twice = %v; want errTOTPEnrolled", err)
		}
		if err := st.EnrolTOTP(by, 999, totpRecord{Sealed: sealed}, nil); !errors.Is(err, errNotFound) {
			t.Errorf("EnrolTOTP(unknown user) = %v; want errNotFound", err)
		}
		if got, err := st.TOTPOf(alice.ID); err != nil || string(got.Sealed) != string(sealed) || got.LastStep != 100 || !got.CreatedAt.Equal(now) {
			t.Errorf("TOTPOf = %+v, %v; want it as enrolled", got, err)
		}
		if f := factors(alice); !f.TOTP || f.Passkeys != 0 || f.RecoveryLeft != recoveryCodeCount {
			t.Errorf("after TOTP enrolment alice holds %+v; want TOTP and %d codes", f, recoveryCodeCount)
		}
		if f := factors(bob); f.any() || f.RecoveryLeft != 0 {
			t.Errorf("bob holds %+v after alice enrolled", f)
		}

		// Steps: only later ones, each once.
		for _, c := range []struct {
			step int64
			want error
		}{{100, errStepUsed}, {99, errStepUsed}, {101, nil}, {101, errStepUsed}, {103, nil}, {102, errStepUsed}} {
			if err := st.UseTOTPStep(alice.ID, c.step); !errors.Is(err, c.want) {
				t.Errorf("UseTOTPStep(%d) = %v; want %v", c.step, err, c.want)
			}
		}
		if err := st.UseTOTPStep(bob.ID, 200); !errors.Is(err, errNotFound) {
			t.Errorf("UseTOTPStep for a user without TOTP = %v; want errNotFound", err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if st.UseTOTPStep(alice.ID, 104) == nil {
					mu.Lock()
					won++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if won != 1 {
			t.Errorf("one step used by 8 at once: %d succeeded; want 1", won)
		}

		// Recovery codes: each once, another user's never.
		a := codes("a")
		if _, err := st.UseRecoveryCode(by, bob.ID, a[0]); !errors.Is(err, errNotFound) {
			t.Errorf("bob using alice's code = %v; want errNotFound", err)
		}
		if left, err := st.UseRecoveryCode(by, alice.ID, a[0]); err != nil || left != recoveryCodeCount-1 {
			t.Errorf("UseRecoveryCode = %d, %v; want %d left", left, err, recoveryCodeCount-1)
		}
		if _, err := st.UseRecoveryCode(by, alice.ID, a[0]); !errors.Is(err, errNotFound) {
			t.Errorf("a recovery code used twice = %v; want errNotFound", err)
		}
		if err := st.ReplaceRecoveryCodes(by, alice.ID, codes("b")); err != nil {
			t.Fatalf("ReplaceRecoveryCodes: %v", err)
		}
		if _, err := st.UseRecoveryCode(by, alice.ID, a[1]); !errors.Is(err, errNotFound) {
			t.Errorf("an old code after regeneration = %v; want errNotFound", err)
		}
		if f := factors(alice); f.RecoveryLeft != recoveryCodeCount {
			t.Errorf("after regeneration %d codes left; want %d", f.RecoveryLeft, recoveryCodeCount)
		}

		// Passkeys.
		pk := passkeyRecord{User: alice.ID, CredentialID: []byte{1, 2, 3}, Credential: []byte(`{"k":1}`), Name: "Laptop", CreatedAt: now}
		if err := st.AddPasskey(by, &pk, nil); err != nil || pk.ID == 0 {
			t.Fatalf("AddPasskey = %v, id %d", err, pk.ID)
		}
		for _, c := range []struct {
			what string
			p    passkeyRecord
			want error
		}{
			{"same credential", passkeyRecord{User: bob.ID, CredentialID: []byte{1, 2, 3}, Name: "x"}, errPasskeyTaken},
			{"same name", passkeyRecord{User: alice.ID, CredentialID: []byte{4}, Name: "laptop"}, errNameTaken},
			{"unknown user", passkeyRecord{User: 999, CredentialID: []byte{5}, Name: "x"}, errNotFound},
		} {
			if err := st.AddPasskey(by, &c.p, nil); !errors.Is(err, c.want) {
				t.Errorf("AddPasskey(%s) = %v; want %v", c.what, err, c.want)
			}
		}
		phone := passkeyRecord{User: alice.ID, CredentialID: []byte{9, 9}, Credential: []byte(`{}`), Name: "Phone", CreatedAt: now.Add(time.Second)}
		if err := st.AddPasskey(by, &phone, nil); err != nil {
			t.Fatal(err)
		}
		got, u, err := st.PasskeyByCredentialID([]byte{1, 2, 3})
		if err != nil || got.ID != pk.ID || u.ID != alice.ID || got.Name != "Laptop" || string(got.Credential) != `{"k":1}` {
			t.Errorf("PasskeyByCredentialID = %+v, %s, %v; want alice's Laptop", got, u.Name, err)
		}
		if _, _, err := st.PasskeyByCredentialID([]byte{7}); !errors.Is(err, errNotFound) {
			t.Errorf("PasskeyByCredentialID(unknown) = %v; want errNotFound", err)
		}
		if err := st.UpdatePasskeyUse(alice.ID, pk.ID, []byte(`{"k":2}`), now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := st.UpdatePasskeyUse(bob.ID, pk.ID, []byte(`{}`), now); !errors.Is(err, errNotFound) {
			t.Errorf("UpdatePasskeyUse by another user = %v; want errNotFound", err)
		}
		if err := st.RenamePasskey(by, alice.ID, pk.ID, "PHONE"); !errors.Is(err, errNameTaken) {
			t.Errorf("RenamePasskey to a name taken = %v; want errNameTaken", err)
		}
		if err := st.RenamePasskey(by, bob.ID, pk.ID, "Mine"); !errors.Is(err, errNotFound) {
			t.Errorf("RenamePasskey by another user = %v; want errNotFound", err)
		}
		if err := st.RenamePasskey(by, alice.ID, pk.ID, "Work laptop"); err != nil {
			t.Fatal(err)
		}
		list, err := st.PasskeysOf(alice.ID)
		if err != nil || len(list) != 2 || list[0].Name != "Work laptop" || string(list[0].Credential) != `{"k":2}` ||
			!list[0].LastUsedAt.Equal(now.Add(time.Hour)) || list[1].ID != phone.ID || !list[1].LastUsedAt.IsZero() {
			t.Errorf("PasskeysOf = %+v, %v; want the renamed, used Laptop then Phone", list, err)
		}
		if f := factors(alice); !f.TOTP || f.Passkeys != 2 {
			t.Errorf("alice holds %+v; want TOTP and 2 passkeys", f)
		}

		// Removing factors: the codes stay while one remains.
		if err := st.DeletePasskey(by, bob.ID, pk.ID); !errors.Is(err, errNotFound) {
			t.Errorf("DeletePasskey by another user = %v; want errNotFound", err)
		}
		if err := st.DeletePasskey(by, alice.ID, pk.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.PasskeyByCredentialID([]byte{1, 2, 3}); !errors.Is(err, errNotFound) {
			t.Errorf("a deleted passkey's credential: %v; want errNotFound", err)
		}
		if err := st.RemoveTOTP(by, alice.ID); err != nil {
			t.Fatal(err)
		}
		if err := st.RemoveTOTP(by, alice.ID); !errors.Is(err, errNotFound) {
			t.Errorf("RemoveTOTP twice = %v; want errNotFound", err)
		}
		if f := factors(alice); f.TOTP || f.Passkeys != 1 || f.RecoveryLeft != recoveryCodeCount {
			t.Errorf("with one passkey left alice holds %+v; want it and her codes", f)
		}
		if err := st.DeletePasskey(by, alice.ID, phone.ID); err != nil {
			t.Fatal(err)
		}
		if f := factors(alice); f.any() || f.RecoveryLeft != 0 {
			t.Errorf("with no factor left alice holds %+v; want nothing", f)
		}

		// The reset ends the sessions too.
		if err := st.EnrolTOTP(by, alice.ID, totpRecord{Sealed: sealed}, codes("c")); err != nil {
			t.Fatal(err)
		}
		again := passkeyRecord{User: alice.ID, CredentialID: []byte{1, 2, 3}, Name: "Laptop"}
		if err := st.AddPasskey(by, &again, nil); err != nil {
			t.Fatalf("AddPasskey with a deleted passkey's credential: %v", err)
		}
		for i := range 2 {
			rec := sessionRecord{User: alice.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeenAt: now, SignedInAt: now}
			if err := st.CreateSession(by, sessionHash{byte(i + 1)}, rec, nil, 0); err != nil {
				t.Fatal(err)
			}
		}
		bobSession := sessionRecord{User: bob.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeenAt: now, SignedInAt: now}
		if err := st.CreateSession(by, sessionHash{9}, bobSession, nil, 0); err != nil {
			t.Fatal(err)
		}
		if n, err := st.ResetSecondFactors(by, alice.ID); err != nil || n != 2 {
			t.Errorf("ResetSecondFactors = %d, %v; want 2 sessions ended", n, err)
		}
		if f := factors(alice); f.any() || f.RecoveryLeft != 0 {
			t.Errorf("after the reset alice holds %+v; want nothing", f)
		}
		if _, _, err := st.PasskeyByCredentialID([]byte{1, 2, 3}); !errors.Is(err, errNotFound) {
			t.Errorf("a reset passkey's credential: %v; want errNotFound", err)
		}
		if list, _ := st.SessionsOf(alice.ID); len(list) != 0 {
			t.Errorf("alice holds %d sessions after the reset", len(list))
		}
		if list, _ := st.SessionsOf(bob.ID); len(list) != 1 {
			t.Errorf("bob holds %d sessions after alice's reset; want 1", len(list))
		}
		if _, err := st.ResetSecondFactors(by, 999); !errors.Is(err, errNotFound) {
			t.Errorf("ResetSecondFactors(unknown) = %v; want errNotFound", err)
		}

		// Deleting a user deletes their factors.
		bobKey := passkeyRecord{User: bob.ID, CredentialID: []byte{42}, Name: "Key"}
		if err := st.AddPasskey(by, &bobKey, codes("d")); err != nil {
			t.Fatal(err)
		}
		if err := st.EnrolTOTP(by, bob.ID, totpRecord{Sealed: sealed}, nil); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteUser(by, bob.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.PasskeyByCredentialID([]byte{42}); !errors.Is(err, errNotFound) {
			t.Errorf("a deleted user's passkey: %v; want errNotFound", err)
		}
		if _, err := st.TOTPOf(bob.ID); !errors.Is(err, errNotFound) {
			t.Errorf("a deleted user's TOTP: %v; want errNotFound", err)
		}
		// Every change to what guards alice's account is in the log, about
		// her, by the actor that made it.
		evs, err := st.AuditEvents(auditQuery{User: alice.ID, Oldest: true, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range evs {
			if e.SubjectID == alice.ID && e.ActorID == by.ID && e.Via == "page" && !strings.HasPrefix(e.Kind, "signin.") {
				kinds = append(kinds, e.Kind)
			}
		}
		want := []string{"tfa.enrolled", "recovery.used", "recovery.regenerated", "passkey.added", "passkey.added",
			"passkey.removed", "tfa.removed", "passkey.removed", "tfa.enrolled", "passkey.added", "tfa.reset"}
		if !slices.Equal(kinds, want) {
			t.Errorf("alice's events = %q; want %q", kinds, want)
		}
		if err := st.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
}

// describeSecondFactors writes what user holds beside the password into
// b, for storeContents: times as stored (Unix nanoseconds), so that
// engines compare alike.
func describeSecondFactors(t testing.TB, b *strings.Builder, st store, user uint64) {
	t.Helper()
	f, err := st.SecondFactors(user)
	if err != nil {
		t.Fatalf("SecondFactors(%d): %v", user, err)
	}
	if !f.any() && f.RecoveryLeft == 0 {
		return
	}
	fmt.Fprintf(b, "  second factors %+v\n", f)
	if totp, err := st.TOTPOf(user); err == nil {
		fmt.Fprintf(b, "  totp %x step %d at %d\n", totp.Sealed, totp.LastStep, unixNano(totp.CreatedAt))
	}
	keys, err := st.PasskeysOf(user)
	if err != nil {
		t.Fatalf("PasskeysOf(%d): %v", user, err)
	}
	for _, p := range keys {
		fmt.Fprintf(b, "  passkey %d %x %s %q at %d used %d\n", p.ID, p.CredentialID, p.Credential, p.Name, unixNano(p.CreatedAt), unixNano(p.LastUsedAt))
	}
}

// TestCheckSecondFactors: Check reports a passkey whose index entries are
// gone and a TOTP secret whose user is gone.
func TestCheckSecondFactors(t *testing.T) {
	st, _ := newTestDB(t)
	alice := storeUser(t, st, "alice", false)
	p := passkeyRecord{User: alice.ID, CredentialID: []byte{1}, Name: "Key"}
	if err := st.AddPasskey(testActor, &p, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Check(); err != nil {
		t.Fatalf("Check of a sound database: %v", err)
	}
	err := st.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketPasskeysByCredential).Delete([]byte{1}); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketTOTP), itob(999), &totpRecord{Sealed: []byte("x")})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Check()
	if err == nil || !strings.Contains(err.Error(), "passkeys_by_credential") || !strings.Contains(err.Error(), "missing user 999") {
		t.Errorf("Check = %v; want the passkey's missing entry and the orphan TOTP secret", err)
	}
}
