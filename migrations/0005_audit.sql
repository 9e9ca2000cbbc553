-- Schema 5: the security log. Events are appended in the transaction of
-- the change they describe, chained by SHA-256 (audit.go). The one row of
-- audit_head is locked FOR UPDATE by every append, so that seqs commit in
-- order across instances: a reader paging forward by seq never sees a gap
-- filled later. Times are Unix nanoseconds, never before the previous
-- event's, so that a time range is a seq range. No column holds a secret.

CREATE TABLE audit_events (
	seq        bigint PRIMARY KEY,
	at         bigint NOT NULL,
	kind       text   NOT NULL,
	outcome    text   NOT NULL,
	actor_id   bigint NOT NULL,   -- 0: anonymous or the system
	actor      text   NOT NULL,
	subject_id bigint NOT NULL,   -- 0: none
	subject    text   NOT NULL,
	token_id   bigint NOT NULL,
	token_hint text   NOT NULL,
	client     text   NOT NULL,
	grant_id   bigint NOT NULL,
	addr       text   NOT NULL,
	agent      text   NOT NULL,
	via        text   NOT NULL,
	detail     text   NOT NULL,
	prev       text   NOT NULL,
	hash       text   NOT NULL
);
-- Reads by user (as actor or as subject) and by kind cost what they return.
CREATE INDEX audit_events_actor ON audit_events (actor_id, seq) WHERE actor_id <> 0;
CREATE INDEX audit_events_subject ON audit_events (subject_id, seq) WHERE subject_id <> 0;
CREATE INDEX audit_events_kind ON audit_events (kind, seq);
CREATE INDEX audit_events_at ON audit_events (at);

-- The head of the chain, and the hash of the last event retention purged.
CREATE TABLE audit_head (
	one    boolean PRIMARY KEY DEFAULT true CHECK (one),
	seq    bigint  NOT NULL,
	hash   text    NOT NULL,
	at     bigint  NOT NULL,
	anchor text    NOT NULL
);
INSERT INTO audit_head (seq, hash, at, anchor) VALUES (0, '', 0, '');

-- The addresses each user signed in from, for signin.new_address.
CREATE TABLE audit_seen (
	user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	addr    text   NOT NULL,
	PRIMARY KEY (user_id, addr)
);
