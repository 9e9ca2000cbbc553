package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// newHTTPServer returns the HTTP server of serve with every limit of cfg, so
// that no client can hold a connection, a goroutine or memory for long:
// headers must arrive within ReadHeaderTimeout and hold at most
// MaxHeaderBytes (more is answered 431 by net/http), the whole request
// within ReadTimeout, the answer within WriteTimeout, and an idle
// keep-alive connection is closed after IdleTimeout.
func newHTTPServer(cfg config, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// checkLimits rejects limits that would switch a protection off or cannot
// work, naming the flag.
func (c *config) checkLimits() error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"-read-header-timeout", c.ReadHeaderTimeout},
		{"-read-timeout", c.ReadTimeout},
		{"-write-timeout", c.WriteTimeout},
		{"-idle-timeout", c.IdleTimeout},
	} {
		// net/http reads zero as "no limit": refuse it rather than serve
		// without a timeout.
		if d.v <= 0 {
			return fmt.Errorf("%s: %v is not positive", d.flag, d.v)
		}
	}
	if c.MaxHeaderBytes < 4<<10 {
		return fmt.Errorf("-max-header-bytes: %d is below 4096; a browser's headers would not fit", c.MaxHeaderBytes)
	}
	if c.MaxSessionsPerUser < 1 {
		return fmt.Errorf("-max-sessions-per-user: %d is below 1", c.MaxSessionsPerUser)
	}
	if c.HashQueue < 0 {
		return fmt.Errorf("-hash-queue: %d is negative", c.HashQueue)
	}
	if c.MaxDBSize < 0 {
		return fmt.Errorf("-max-db-size: %d is negative", c.MaxDBSize)
	}
	if c.MaxDBSize > 0 && c.MaxDBSize < 1<<20 {
		return fmt.Errorf("-max-db-size: %d is below 1 MiB", c.MaxDBSize)
	}
	return nil
}

// isStorageFull reports whether err is a write that failed for want of
// space: the database reached -max-db-size, or the disk is full. Nothing
// of such a write was committed.
func isStorageFull(err error) bool {
	return errors.Is(err, errSpaceReserved) || errors.Is(err, bolterrors.ErrMaxSizeReached) ||
		errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// errSpaceReserved refuses a write that would create something (a user, a
// token, a session) in the space kept for deletions.
var errSpaceReserved = errors.New("storage is full: the space left is kept for deletions")

// Deletions write too: bbolt copies every page it changes and frees the
// old ones only after the commit. So that a revocation, a sign-out or a
// user's removal always fits under -max-db-size, creations may not use the
// last part of the space: deletionReserve of it, at least
// minDeletionReserve.
const (
	deletionReserveShare = 8 // one eighth of the space
	minDeletionReserve   = 256 << 10
)

// creationLimit returns how many bytes of pages may be in use before
// creations are refused, for a database file of at most maxSize bytes
// that bbolt grows by allocSize (0: no limit, and no reserve).
func creationLimit(maxSize, allocSize int) int {
	if maxSize <= 0 {
		return 0
	}
	data := boltDataLimit(maxSize, allocSize)
	return data - max(data/deletionReserveShare, minDeletionReserve)
}

// boltDataLimit returns how far the pages of a bbolt file may reach when
// the file may grow to at most maxSize bytes. bbolt grows a file to its
// mapping size, a power of two, while that is at most its AllocSize (16
// MiB), and in steps of AllocSize beyond: so a file capped at 3 MiB stops
// at 2 MiB of pages, and one capped at 100 MiB at 84 MiB.
func boltDataLimit(maxSize, allocSize int) int {
	limit := 0
	for p := 32 << 10; p <= min(maxSize, allocSize); p *= 2 {
		limit = p
	}
	if maxSize-allocSize > limit {
		limit = maxSize - allocSize
	}
	return limit
}

// roomToCreate returns errSpaceReserved when the pages in use, not counting
// free ones, have reached the creation limit.
func (s *boltStore) roomToCreate(tx *bolt.Tx) error {
	if s.creationLimit <= 0 {
		return nil
	}
	if s.usedBytes(tx) >= int64(s.creationLimit) {
		return errSpaceReserved
	}
	return nil
}

// innermost returns the server's own ResponseWriter under any wrappers.
// http.MaxBytesReader must be given that one: only through it can it tell
// the server that a body was too large, so that the server answers and
// hangs up instead of first reading up to 256 KiB more of the body (and
// waiting for it until -read-timeout from a client that waits for the
// answer before sending the rest).
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}
