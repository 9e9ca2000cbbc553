package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// The audit commands: verify the chain of the security log, and export
// events as JSON Lines.

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("audit", args, stderr, "verify|export")
	if err != nil {
		return err
	}
	switch sub {
	case "verify":
		return auditVerify(ctx, args, stdout, stderr)
	case "export":
		return auditExport(ctx, args, stdout, stderr)
	}
	return fmt.Errorf("audit: unknown subcommand %q (want verify or export)", sub)
}

// verifyChain walks the security log of st from its first kept event to
// its head, oldest first, a page at a time, checking each event against
// the one before it (for the first, against the anchor retention left),
// and that the log ends at the head that st keeps apart. It returns the
// number of events and the head, or an *auditBreak naming the first event
// that does not fit.
func verifyChain(ctx context.Context, st store) (n int, headSeq uint64, headHash string, err error) {
	anchor, err := st.AuditAnchor()
	if err != nil {
		return 0, 0, "", err
	}
	// The head first: events recorded while the walk runs lie past it.
	if headSeq, headHash, err = st.AuditHead(); err != nil {
		return 0, 0, "", err
	}
	chain := newAuditChain(anchor)
	q := auditQuery{Oldest: true, Limit: maxAuditPage}
	last, lastHash := uint64(0), anchor
	for last < headSeq {
		if err := ctx.Err(); err != nil {
			return n, headSeq, headHash, err
		}
		evs, err := st.AuditEvents(q)
		if err != nil {
			return n, headSeq, headHash, err
		}
		for _, e := range evs {
			if e.Seq > headSeq {
				break
			}
			if err := chain.next(e); err != nil {
				return n, headSeq, headHash, err
			}
			last, lastHash = e.Seq, e.Hash
			n++
		}
		if len(evs) < q.Limit {
			break
		}
		q.After = last
	}
	switch {
	case last != headSeq:
		return n, headSeq, headHash, &auditBreak{Seq: headSeq, Reason: fmt.Sprintf(
			"the head kept apart is event %d, but the log ends at event %d: events at its end were removed", headSeq, last)}
	case lastHash != headHash:
		return n, headSeq, headHash, &auditBreak{Seq: headSeq, Reason: "its hash is not the head's kept apart: it was changed and hashed again"}
	}
	return n, headSeq, headHash, nil
}

func auditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := command{"audit verify", "", "Check the hash chain of the security log, from the first kept event to the head, and print the head: keep it elsewhere to prove later that the past was not rewritten. Exits 1 naming the first event that does not fit."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	st, err := openCLIStore(db, readOnlyDB)
	if err != nil {
		return err
	}
	defer st.Close()
	n, seq, hash, err := verifyChain(ctx, st)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	fmt.Fprintf(stdout, "ok: %s, head %d %s\n", plural(n, "event"), seq, cmp.Or(hash, "none"))
	return nil
}

func auditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := command{"audit export", "[-since T] [-until T] [-user NAME] [-kind K]... [-o FILE]", "Write events of the security log as JSON Lines, oldest first: one event a line, with its seq, prev and hash. T is an RFC 3339 time or a date (UTC); -until is exclusive, and a date includes its day."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	var f auditFilter
	fs.StringVar(&f.Since, "since", "", "only events at or after this `time`")
	fs.StringVar(&f.Until, "until", "", "only events before this `time`")
	fs.StringVar(&f.User, "user", "", "only events this user did or that were done to them (a `name`, or a removed user's id)")
	kinds := repeatedFlag{}
	fs.Var(&kinds, "kind", "only events of this `kind` (repeatable), such as token.revoked")
	out := fs.String("o", "", "write to this `file` (created with mode 600) rather than to standard output")
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	f.Kinds = kinds
	st, err := openCLIStore(db, readOnlyDB)
	if err != nil {
		return err
	}
	defer st.Close()
	q, err := f.query(st)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	w := stdout
	var file *os.File
	if *out != "" {
		if file, err = os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
		defer file.Close()
		w = file
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		q.Limit = maxAuditPage
		q.Oldest = true
		evs, err := st.AuditEvents(q)
		if err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
		for _, e := range evs {
			if err := enc.Encode(e); err != nil {
				return fmt.Errorf("audit export: %w", err)
			}
		}
		n += len(evs)
		if len(evs) < q.Limit {
			break
		}
		q.After = evs[len(evs)-1].Seq
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if file != nil {
		if err := file.Close(); err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
		fmt.Fprintf(stderr, "wrote %s to %s\n", plural(n, "event"), *out)
	}
	return nil
}
