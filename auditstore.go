package main

import (
	"context"
	"time"
)

// The security log: every security event, recorded by the store in the
// same transaction as the change it describes, chained by SHA-256 so that
// a rewritten past shows (audit.go verifies the chain).
//
// Who makes a change, and from where, reaches the store as an actor: every
// store write that makes a security-relevant change takes one as its first
// argument, and the engine appends the event (or events) that the change
// makes, built by the shared code of audit.go, in the transaction of the
// change. Events that come with no change (a sign-in refused, a backup
// taken) are recorded with RecordEvents.

// actor is who makes a change and from where.
type actor struct {
	ID    uint64 // the user; 0 for anonymous or the system
	Name  string // the user's name; "" for anonymous; "system" for the system
	Addr  string // the client's address; "" from the command line or the system
	Agent string // the client's user agent, cut to maxAuditAgentLen
	Via   string // "page", "api", "oauth", "cli" or "system"
	// At is when the change is made, on the caller's clock; zero: the
	// engine's. Events keep it to the microsecond, never before the
	// event recorded before them.
	At time.Time
}

// systemActor is the actor of what tokend does by itself (purges, warnings).
var systemActor = actor{Name: "system", Via: "system"}

// auditEvent is one entry of the security log. It never holds a secret:
// no token, password, session id, code or setup code, nor any part of one
// beyond a token's stored hint.
type auditEvent struct {
	Seq       uint64    `json:"seq"` // its place in the chain, from 1; set by the store
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`    // one of auditKinds
	Outcome   string    `json:"outcome"` // "ok", "failed", "throttled", "refused"
	ActorID   uint64    `json:"actor_id,omitempty"`
	Actor     string    `json:"actor"`                // a user's name, "anonymous" or "system"
	SubjectID uint64    `json:"subject_id,omitempty"` // the user the event is about
	Subject   string    `json:"subject,omitempty"`
	TokenID   uint64    `json:"token_id,omitempty"`
	TokenHint string    `json:"token_hint,omitempty"`
	Client    string    `json:"client,omitempty"` // an OAuth client's id
	GrantID   uint64    `json:"grant_id,omitempty"`
	Addr      string    `json:"addr,omitempty"`
	Agent     string    `json:"agent,omitempty"`
	Via       string    `json:"via,omitempty"`
	Detail    string    `json:"detail,omitempty"` // short words, never a secret
	// Prev is the hex SHA-256 of the previous event's canonical encoding;
	// Hash is this one's (every field above and Prev, in a fixed order:
	// see auditEvent.canonical in audit.go).
	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// auditQuery selects events. Reads cost in proportion to what they return.
type auditQuery struct {
	User  uint64   // events whose actor or subject is this user; 0: anyone
	Kinds []string // nil: every kind
	Since time.Time
	Until time.Time // exclusive; zero: no bound
	// Before pages backwards: events with Seq < Before, newest first
	// (0: from the newest). After pages forwards: events with Seq > After,
	// oldest first. At most one is set.
	Before, After uint64
	// Oldest reads oldest first from the first kept event when After is 0.
	Oldest bool
	Limit  int // at most maxAuditPage
}

// auditStore is the part of the store contract for the security log.
type auditStore interface {
	// RecordEvents appends events that come with no change of their own.
	RecordEvents(evs ...auditEvent) error
	// AuditEvents returns the events q selects.
	AuditEvents(q auditQuery) ([]auditEvent, error)
	// AuditHead returns the newest event's Seq and Hash ("" when none).
	AuditHead() (seq uint64, hash string, err error)
	// AuditAnchor returns the Hash of the last event purged by retention
	// ("" when none was), which the first kept event's Prev must equal.
	AuditAnchor() (string, error)
	// PurgeAudit deletes events older than before, oldest first, at most
	// batch a transaction, until none is left or ctx ends, keeping the
	// anchor up to date.
	PurgeAudit(ctx context.Context, before time.Time, batch int) (int, error)
}

// maxAuditPage bounds the events one read returns.
const maxAuditPage = 500

// maxAuditAgentLen bounds the user agent an event keeps, in bytes.
const maxAuditAgentLen = 200
