-- Schema 2: the sign-in throttle, shared by every instance on the
-- database (pgthrottle.go), so that N instances do not give an attacker N
-- times the guesses. Times are Unix nanoseconds (bigint).

-- A leaky bucket per key: 'u:<user id>' for an account, 'n:<number>' for
-- one of the buckets that names no user holds share, 'a:<address>' for a
-- client address (an IPv6 one by its /64). A bucket is kept as the time it
-- will be empty (the GCRA form of a leaky bucket): its level at t is
-- greatest(empty_at - t, 0) / the rule's interval. A row whose empty_at
-- has passed is an empty bucket, the same as no row, and is deleted by the
-- next clean-up.
CREATE TABLE throttle_buckets (
	key      text   PRIMARY KEY,
	empty_at bigint NOT NULL
);
-- The clean-up deletes the drained buckets, and the fullest address
-- buckets are kept when there are too many.
CREATE INDEX throttle_buckets_empty_at ON throttle_buckets (empty_at);

-- The addresses from which each account signed in, with the latest
-- success from each: at most 32 an account, the oldest forgotten first.
-- No foreign key: ids are never handed out twice, and a removed user's
-- rows age out.
CREATE TABLE throttle_known (
	user_id bigint NOT NULL,
	addr    text   NOT NULL,
	seen_at bigint NOT NULL,
	PRIMARY KEY (user_id, addr)
);
-- The clean-up forgets successes older than 30 days.
CREATE INDEX throttle_known_seen_at ON throttle_known (seen_at);

-- The key of the hash that spreads names no user holds over their shared
-- buckets: one for every instance, so that a made-up name counts against
-- the same bucket whichever instance answers. The first instance to need
-- it stores a random one.
CREATE TABLE throttle_key (
	only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
	key      bytea   NOT NULL CHECK (octet_length(key) = 32)
);
