package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cache coherence across tokend instances on one PostgreSQL database.
//
// Every write that deletes tokens or changes a user sends, in its own
// transaction, a notification on pgInvalidateChannel, so that every
// instance hears of it exactly when it commits, in commit order. The
// instance that wrote tells its own sink directly before the write
// returns (pgStore.update), and hears the notification too: both are
// idempotent.
//
// Notifications are lost while a listener is disconnected, so the
// listener proves its channel works: every heartbeatEvery it sends a
// heartbeat of its own on the same channel, from a second connection, and
// notes when the last one it received was sent. PostgreSQL delivers
// notifications in commit order, so once the heartbeat sent at T has
// arrived, every change committed before T has arrived too. When no
// heartbeat sent in the last channelLostAfter has arrived, or the
// connection drops, the sink is told to stop trusting its cache (every
// verification reads the database) until the listener has reconnected and
// received a fresh heartbeat of its own: fail closed.

// pgInvalidateChannel is the channel of invalidation notifications.
const pgInvalidateChannel = "tokend_invalidate"

// Payloads: a kind letter, then its data.
const (
	notifyTokens    = 't' // hex SHA-256 hashes of deleted tokens, concatenated
	notifyAll       = 'a' // every token may be gone
	notifyUser      = 'u' // a user changed
	notifyHeartbeat = 'h' // instance id ":" sequence number
)

// PostgreSQL refuses payloads of 8000 bytes or more. A notification names
// at most notifyHashesPer tokens, and a transaction sends at most
// notifyMaxChunks of them before it says "all" instead.
const (
	notifyHashesPer = (8000 - 1) / (2 * len(tokenHash{}))
	notifyMaxChunks = 16
)

// invalidationPayloads returns the notifications for a transaction that
// deleted the tokens gone and, when userChanged, changed a user.
func invalidationPayloads(gone []tokenHash, userChanged bool) []string {
	var out []string
	if userChanged {
		out = append(out, string(notifyUser))
	}
	if len(gone) > notifyHashesPer*notifyMaxChunks {
		return append(out, string(notifyAll))
	}
	for chunk := range slices.Chunk(gone, notifyHashesPer) {
		var b strings.Builder
		b.Grow(1 + 2*len(tokenHash{})*len(chunk))
		b.WriteByte(notifyTokens)
		for _, h := range chunk {
			b.WriteString(hex.EncodeToString(h[:]))
		}
		out = append(out, b.String())
	}
	return out
}

// dispatchInvalidation tells sink what payload says. A payload it cannot
// read makes it forget everything: it may be from a newer tokend.
func dispatchInvalidation(sink invalidationSink, payload string) {
	if payload == "" {
		sink.allTokensGone()
		sink.changed()
		return
	}
	data := payload[1:]
	switch payload[0] {
	case notifyUser:
		sink.changed()
	case notifyAll:
		sink.allTokensGone()
	case notifyTokens:
		const width = 2 * len(tokenHash{})
		if len(data)%width != 0 {
			sink.allTokensGone()
			return
		}
		hashes := make([]tokenHash, 0, len(data)/width)
		for i := 0; i < len(data); i += width {
			var h tokenHash
			if _, err := hex.Decode(h[:], []byte(data[i:i+width])); err != nil {
				sink.allTokensGone()
				return
			}
			hashes = append(hashes, h)
		}
		sink.tokensGone(hashes)
	case notifyHeartbeat:
		// Another instance's heartbeat: nothing changed.
	default:
		sink.allTokensGone()
		sink.changed()
	}
}

// Timing of the channel check. A revoked token is refused everywhere
// within channelLostAfter (plus one heartbeat) of its revocation.
const (
	heartbeatEvery   = 200 * time.Millisecond
	channelLostAfter = time.Second
	reconnectMin     = 100 * time.Millisecond
	reconnectMax     = 5 * time.Second
)

// pgListener follows the invalidation channel for one instance.
type pgListener struct {
	cfg    *pgx.ConnConfig
	sink   invalidationSink
	log    *slog.Logger
	id     string // this instance's name in its heartbeats
	cancel context.CancelFunc
	done   chan struct{}

	// trusted is whether the sink was last told to trust its cache.
	trusted atomic.Bool
	// losses counts the times the channel was lost, for the metrics.
	losses atomic.Uint64
	// The backend processes of the listening and the heartbeat
	// connections, for tests that cut them.
	mu                 sync.Mutex
	listenPID, sendPID uint32
}

// startInvalidations makes sink hear every change to tokens and users,
// this instance's synchronously and other instances' through the
// notification channel, and starts the listener. The sink is told
// trust(false) before this returns: the cache is not trusted until the
// listener has heard its first heartbeat. Close stops the listener.
func (s *pgStore) startInvalidations(sink invalidationSink, log *slog.Logger) error {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return fmt.Errorf("read random bytes: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &pgListener{
		cfg:    s.pool.Config().ConnConfig.Copy(),
		sink:   sink,
		log:    log,
		id:     hex.EncodeToString(id[:]),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	s.sink.Store(&sink)
	s.listener = l
	sink.trust(false)
	go l.run(ctx)
	return nil
}

// stop ends the listener and waits for it.
func (l *pgListener) stop() {
	l.cancel()
	<-l.done
}

// run listens until ctx ends, reconnecting with a growing pause after
// every loss.
func (l *pgListener) run(ctx context.Context) {
	defer close(l.done)
	pause := reconnectMin
	for ctx.Err() == nil {
		heard, err := l.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		l.lost(err)
		if heard {
			pause = reconnectMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, reconnectMax)
	}
}

// lost tells the sink to stop trusting its cache, once per loss.
func (l *pgListener) lost(err error) {
	if !l.trusted.Swap(false) {
		l.log.Debug("invalidation channel still down", "err", err)
		return
	}
	l.losses.Add(1)
	l.sink.trust(false)
	l.log.Warn("invalidation channel lost: every token is verified from the database until it is back", "err", err)
}

// listenOnce connects, listens and dispatches notifications until the
// channel fails or ctx ends. It reports whether it heard a heartbeat of
// its own.
func (l *pgListener) listenOnce(ctx context.Context) (heard bool, err error) {
	connectCtx, cancel := context.WithTimeout(ctx, channelLostAfter)
	defer cancel()
	listen, err := pgx.ConnectConfig(connectCtx, l.cfg)
	if err != nil {
		return false, pgError(err)
	}
	defer listen.Close(context.Background())
	send, err := pgx.ConnectConfig(connectCtx, l.cfg)
	if err != nil {
		return false, pgError(err)
	}
	defer send.Close(context.Background())
	if _, err := listen.Exec(connectCtx, "LISTEN "+pgInvalidateChannel); err != nil {
		return false, pgError(err)
	}
	l.mu.Lock()
	l.listenPID, l.sendPID = listen.PgConn().PID(), send.PgConn().PID()
	l.mu.Unlock()

	var seq uint64
	sentAt := map[uint64]time.Time{}
	prefix := string(notifyHeartbeat) + l.id + ":"
	beat := func() error {
		seq++
		now := time.Now()
		sentAt[seq] = now
		beatCtx, cancel := context.WithDeadline(ctx, now.Add(channelLostAfter))
		defer cancel()
		_, err := send.Exec(beatCtx, "SELECT pg_notify($1, $2)", pgInvalidateChannel, prefix+strconv.FormatUint(seq, 10))
		return err
	}
	start := time.Now()
	if err := beat(); err != nil {
		return false, pgError(err)
	}
	// deadline: when the channel counts as lost unless a fresher heartbeat
	// of ours arrives. Until the first one, it runs from the start.
	deadline := start.Add(channelLostAfter)
	nextBeat := start.Add(heartbeatEvery)
	for {
		now := time.Now()
		if !now.Before(deadline) {
			return heard, fmt.Errorf("no heartbeat of this instance's came back within %v", channelLostAfter)
		}
		if !now.Before(nextBeat) {
			if err := beat(); err != nil {
				return heard, pgError(err)
			}
			nextBeat = now.Add(heartbeatEvery)
		}
		wake := nextBeat
		if deadline.Before(wake) {
			wake = deadline
		}
		waitCtx, cancel := context.WithDeadline(ctx, wake)
		n, err := listen.WaitForNotification(waitCtx)
		cancel()
		if ctx.Err() != nil {
			return heard, ctx.Err()
		}
		if err != nil {
			if waitCtx.Err() != nil && !listen.IsClosed() {
				continue // time to beat, or to give up: see the top of the loop
			}
			return heard, pgError(err)
		}
		if !strings.HasPrefix(n.Payload, prefix) {
			dispatchInvalidation(l.sink, n.Payload)
			continue
		}
		got, err := strconv.ParseUint(n.Payload[len(prefix):], 10, 64)
		at, ok := sentAt[got]
		if err != nil || !ok {
			continue
		}
		for k := range sentAt {
			if k <= got {
				delete(sentAt, k)
			}
		}
		deadline = at.Add(channelLostAfter)
		if !heard {
			heard = true
			l.trusted.Store(true)
			l.sink.trust(true)
			l.log.Info("invalidation channel up: the auth cache starts empty")
		}
	}
}

// listenerPID returns the backend pid of the listening connection.
func (l *pgListener) listenerPID() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listenPID
}

// senderPID returns the backend pid of the heartbeat connection.
func (l *pgListener) senderPID() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sendPID
}
