package main

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
)

// testActor is who makes the changes that tests make straight through the
// store.
var testActor = actor{Name: "test", Via: "test"}

// assertUnchangedButRefusals is assertUnchanged for a request refused at
// sign-in: the only change allowed is what a refused sign-in records, its
// signin.failed or signin.throttled event (with its index entries and the
// head of the log).
func assertUnchangedButRefusals(t testing.TB, what string, before, after map[string]string) {
	t.Helper()
	head := string(bucketMeta) + "/" + hex.EncodeToString(keyAuditHead)
	strip := func(m map[string]string, keep func(k, v string) bool) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			if keep(k, v) {
				out[k] = v
			}
		}
		return out
	}
	after = strip(after, func(k, v string) bool {
		if old, ok := before[k]; ok && old == v {
			return true
		}
		switch {
		case strings.HasPrefix(k, string(bucketAudit)+"/"):
			var e auditEvent
			if json.Unmarshal([]byte(v), &e) == nil && (e.Kind == kindSigninFailed || e.Kind == kindSigninThrottled) {
				return false
			}
			return true
		case strings.HasPrefix(k, string(bucketAuditByUser)+"/"), strings.HasPrefix(k, string(bucketAuditByKind)+"/"),
			strings.HasPrefix(k, string(bucketAudit)+"#"), k == head:
			return false
		}
		return true
	})
	before = strip(before, func(k, _ string) bool {
		_, kept := after[k]
		return kept || !(strings.HasPrefix(k, string(bucketAudit)) || k == head)
	})
	assertUnchanged(t, what, before, after)
}
