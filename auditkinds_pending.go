package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Stand-ins for what audit.go will hold, until it lands; removed then.

var auditKinds = []struct{ Kind, Label string }{
	{"signin.succeeded", "Signed in"},
	{"signin.failed", "Sign-in failed"},
	{"token.created", "Token created"},
	{"token.revoked", "Token revoked"},
	{"user.added", "User added"},
}

func auditKindLabel(kind string) string {
	for _, k := range auditKinds {
		if k.Kind == kind {
			return k.Label
		}
	}
	return kind
}

func isAuditKind(kind string) bool {
	for _, k := range auditKinds {
		if k.Kind == kind {
			return true
		}
	}
	return false
}

func (e *auditEvent) hash() string {
	c := *e
	c.Hash = ""
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

type auditChain struct {
	seq   uint64
	prev  string
	first bool
}

func newAuditChain(anchor string) *auditChain {
	return &auditChain{prev: anchor, first: true}
}

type auditBreak struct {
	Seq    uint64
	Reason string
}

func (b *auditBreak) Error() string {
	return fmt.Sprintf("security log broken at event %d: %s", b.Seq, b.Reason)
}

func (c *auditChain) next(e auditEvent) error {
	if e.Prev != c.prev || e.Hash != e.hash() {
		return &auditBreak{e.Seq, "broken"}
	}
	c.seq, c.prev, c.first = e.Seq, e.Hash, false
	return nil
}
