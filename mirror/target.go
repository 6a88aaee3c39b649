package mirror

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/asof/asof/history"
)

// TargetOptions configure a Target.
type TargetOptions struct {
	// Token is the source's secret (mirror.token_file).
	Token []byte
	// Name is what the source's status shows for this target; default
	// the host name and data directory.
	Name   string
	Logger *slog.Logger
	// BatchFrames and BatchBytes bound one batch of frames (default 1024
	// frames, 16 MiB).
	BatchFrames, BatchBytes int
	// BytesPerSec, when positive, limits how fast the pull reads from the
	// source (a pull sharing a thin link with users).
	BytesPerSec int64
}

// A Target keeps a mirror store up to date with its source.
type Target struct {
	store *history.Store
	addr  string
	opts  TargetOptions

	mu sync.Mutex // guards st
	st TargetStatus
}

// TargetStatus is what `asof mirror status` shows on a target.
type TargetStatus struct {
	Source     string        `json:"source"`
	State      string        `json:"state"`
	Error      string        `json:"error,omitempty"`
	Position   history.TID   `json:"position"`    // the newest transaction the mirror holds
	SourceLast history.TID   `json:"source_last"` // the source's newest, as last heard
	Lag        time.Duration `json:"lag_ns"`
	Rate       float64       `json:"rate_bytes_per_s"` // bytes received per second, lately
	Bytes      int64         `json:"bytes"`            // received since start
	Frames     int64         `json:"frames"`           // transactions applied since start
	Blocks     int64         `json:"blocks"`           // blocks fetched since start
	Since      time.Time     `json:"since"`            // when this target started
	rateAt     time.Time
	rateBytes  int64
}

// ErrRefused: the source refused this target (its token, its version).
var ErrRefused = errors.New("mirror: refused by the source")

// NewTarget pulls into s, which must be a mirror, from the source at addr.
func NewTarget(s *history.Store, addr string, opts TargetOptions) *Target {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Name == "" {
		host, _ := os.Hostname()
		opts.Name = host + ":" + s.Dir()
	}
	if opts.BatchFrames <= 0 {
		opts.BatchFrames = 1024
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 16 << 20
	}
	if opts.BytesPerSec > 0 {
		// A batch arrives in about ten seconds at the limit, well inside
		// idleTimeout, and status moves at least that often.
		opts.BatchBytes = int(min(int64(opts.BatchBytes), max(10*opts.BytesPerSec, 64<<10)))
	}
	t := &Target{store: s, addr: addr, opts: opts}
	t.st = TargetStatus{Source: addr, State: "starting", Since: time.Now(), rateAt: time.Now()}
	return t
}

// Status is the target's progress now.
func (t *Target) Status() TargetStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.st
	st.Position = t.store.LastTID()
	if d := time.Since(st.rateAt); d > 3*time.Second {
		// Nothing received lately: the rate is what came since.
		st.Rate = float64(st.Bytes-st.rateBytes) / d.Seconds()
	}
	st.Lag = lag(st.SourceLast, st.Position)
	if st.Position == 0 {
		st.Lag = 0
	}
	return st
}

func (t *Target) set(fn func(st *TargetStatus)) {
	t.mu.Lock()
	fn(&t.st)
	t.mu.Unlock()
}

func (t *Target) received(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.Bytes += int64(n)
	if d := time.Since(t.st.rateAt); d >= time.Second {
		t.st.Rate = float64(t.st.Bytes-t.st.rateBytes) / d.Seconds()
		t.st.rateAt, t.st.rateBytes = time.Now(), t.st.Bytes
	}
}

// Run follows the source until ctx ends, reconnecting with a growing
// pause (up to 30 s) when it cannot reach it or is refused, and pausing
// while the disk is full.
func (t *Target) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		progress := false
		err := t.session(ctx, true, func() { progress = true })
		if ctx.Err() != nil {
			t.set(func(st *TargetStatus) { st.State = "stopped" })
			return nil
		}
		wait := backoff
		switch {
		case errors.Is(err, syscall.ENOSPC):
			wait = 5 * time.Second
			t.set(func(st *TargetStatus) { st.State, st.Error = "paused: the disk is full", err.Error() })
			t.opts.Logger.Error("mirror: the target's disk is full: the pull pauses and goes on once there is room",
				"data", t.store.Dir(), "err", err)
		default:
			t.set(func(st *TargetStatus) { st.State, st.Error = "reconnecting", errText(err) })
			t.opts.Logger.Warn("mirror: lost the source; reconnecting", "source", t.addr, "in", wait, "err", errText(err))
		}
		if progress {
			backoff = time.Second
		} else {
			backoff = min(2*backoff, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			t.set(func(st *TargetStatus) { st.State = "stopped" })
			return nil
		case <-time.After(wait):
		}
	}
}

// Pull brings the mirror up to the source's newest transaction, once: a
// backup disk. A full disk pauses it until there is room; progress, if
// set, is called after each batch.
func (t *Target) Pull(ctx context.Context, progress func(TargetStatus)) error {
	for {
		err := t.session(ctx, false, func() {
			if progress != nil {
				progress(t.Status())
			}
		})
		if err == nil || ctx.Err() != nil || !errors.Is(err, syscall.ENOSPC) {
			return err
		}
		t.opts.Logger.Error("mirror: the target's disk is full: the pull pauses and goes on once there is room", "data", t.store.Dir(), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// link is one connection to the source.
type link struct {
	t *Target
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func (l *link) send(typ byte, body []byte) error {
	l.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := writeMsg(l.w, typ, body); err != nil {
		return err
	}
	return l.w.Flush()
}

// recv reads the next message, which must be of type want (or the
// source's report of a failure).
func (l *link) recv(want byte) ([]byte, error) {
	l.c.SetReadDeadline(time.Now().Add(idleTimeout))
	typ, body, err := readMsg(l.r, maxMessage)
	if err != nil {
		return nil, err
	}
	l.t.received(len(body) + 5)
	switch typ {
	case want:
		return body, nil
	case msgFailed:
		return nil, fmt.Errorf("mirror: the source says: %s", decodeText(body))
	}
	return nil, fmt.Errorf("%w: message type %d, expected %d", errMalformed, typ, want)
}

// connect dials the source and proves both sides hold the token; the
// mirror takes the source's lineage if it has none yet, and refuses a
// source of another.
func (t *Target) connect(ctx context.Context) (*link, error) {
	t.set(func(st *TargetStatus) { st.State = "connecting" })
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	var r io.Reader = c
	if t.opts.BytesPerSec > 0 {
		r = newPacedReader(ctx, c, t.opts.BytesPerSec)
	}
	l := &link{t: t, c: c, r: bufio.NewReaderSize(r, 256<<10), w: bufio.NewWriterSize(c, 64<<10)}
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	fail := func(err error) (*link, error) {
		c.Close()
		return nil, err
	}
	typ, body, err := readMsg(l.r, maxHandshake)
	if err != nil {
		return fail(fmt.Errorf("mirror: %s: no handshake: %w", t.addr, err))
	}
	if typ != msgHello {
		return fail(fmt.Errorf("mirror: %s is not an asof mirror source", t.addr))
	}
	h, err := decodeHello(body)
	if err != nil {
		return fail(fmt.Errorf("mirror: %s: %w", t.addr, err))
	}
	if h.version != Version {
		l.send(msgAuth, auth{version: Version}.encode())
		return fail(fmt.Errorf("%w: the source speaks mirror stream version %d, this target %d: run the same asof on both", ErrRefused, h.version, Version))
	}
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	a := auth{version: Version, mac: mac(t.opts.Token, labelTarget, h.nonce, nonce), nonce: nonce, name: t.opts.Name}
	if err := l.send(msgAuth, a.encode()); err != nil {
		return fail(err)
	}
	typ, body, err = readMsg(l.r, maxHandshake)
	if err != nil {
		return fail(fmt.Errorf("mirror: %s closed the connection during the handshake: %w", t.addr, err))
	}
	if typ == msgRefused {
		return fail(fmt.Errorf("%w: %s", ErrRefused, decodeText(body)))
	}
	if typ != msgWelcome {
		return fail(fmt.Errorf("%w: message type %d in the handshake", errMalformed, typ))
	}
	w, err := decodeWelcome(body)
	if err != nil {
		return fail(err)
	}
	if !hmac.Equal(w.mac, mac(t.opts.Token, labelSource, nonce, h.nonce)) {
		return fail(fmt.Errorf("%w: the source at %s did not prove it holds the token", ErrRefused, t.addr))
	}
	if err := t.store.AdoptLineage(w.lineage); err != nil {
		return fail(fmt.Errorf("mirror: %w", err))
	}
	c.SetDeadline(time.Time{})
	t.set(func(st *TargetStatus) { st.SourceLast, st.Error = w.last, "" })
	return l, nil
}

// session connects and pulls: until caught up, or (follow) until ctx ends
// or the link breaks. progressed is called after each batch applied.
func (t *Target) session(ctx context.Context, follow bool, progressed func()) error {
	l, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer l.c.Close()
	stop := context.AfterFunc(ctx, func() { l.c.Close() })
	defer stop()
	t.set(func(st *TargetStatus) { st.State = "pulling" })
	retries := 0
	for {
		since := t.store.LastTID()
		var wait uint32
		if follow {
			wait = 2000
		}
		if err := l.send(msgPull, pull{since: since, maxFrames: uint32(t.opts.BatchFrames), maxBytes: uint32(t.opts.BatchBytes), waitMs: wait}.encode()); err != nil {
			return err
		}
		body, err := l.recv(msgBatch)
		if err != nil {
			return err
		}
		b, err := decodeBatch(body)
		if err != nil {
			return err
		}
		t.set(func(st *TargetStatus) { st.SourceLast = b.Last })
		t.store.SetMirrorBase(b.Base)
		if len(b.Frames) == 0 {
			if !follow {
				return nil
			}
			t.set(func(st *TargetStatus) { st.State = "following" })
			continue
		}
		done, err := t.apply(l, b)
		if err != nil {
			return err
		}
		if !done {
			// The source freed a block the batch names (its cleaner ran
			// in between): read the batch again, as the source has it now.
			if retries++; retries > 20 {
				return errors.New("mirror: the source's cleaner keeps freeing the blocks of the batch being pulled")
			}
			continue
		}
		retries = 0
		if follow && t.store.LastTID() >= b.Last {
			t.set(func(st *TargetStatus) { st.State = "following" })
		}
		progressed()
	}
}

// fetchChunk is how many block hashes one request names, and fetchWindow
// how many requests are out at once: the source reads the next blocks
// while the target checks and stores the last ones.
const (
	fetchChunk  = 256
	fetchWindow = 4
)

// apply fetches the blocks a batch needs and applies it. done is false
// when the source no longer holds one of them.
func (t *Target) apply(l *link, b *history.MirrorBatch) (bool, error) {
	a, err := t.store.NewApplier()
	if err != nil {
		return false, err
	}
	defer a.Close()
	missing, err := a.Missing(b.Frames)
	if err != nil {
		return false, err
	}
	fetched, freed, err := t.fetch(l, a, missing)
	if err != nil || freed {
		return false, err
	}
	cands, err := a.Candidates(b)
	if err != nil {
		return false, err
	}
	var gone []history.Reconcile
	if len(cands) > 0 {
		keys := make([]history.RecordKey, len(cands))
		for i, c := range cands {
			keys[i] = c.RecordKey
		}
		if err := l.send(msgHave, encodeRecords(keys)); err != nil {
			return false, err
		}
		body, err := l.recv(msgHas)
		if err != nil {
			return false, err
		}
		have, err := decodeBits(body)
		if err != nil {
			return false, err
		}
		if len(have) != len(keys) {
			return false, fmt.Errorf("%w: %d answers to %d records", errMalformed, len(have), len(keys))
		}
		for i, c := range cands {
			if !have[i] {
				gone = append(gone, c)
			}
		}
	}
	if _, err := a.Apply(b, gone); err != nil {
		return false, err
	}
	t.set(func(st *TargetStatus) {
		st.Frames += int64(len(b.Frames))
		st.Blocks += int64(fetched)
	})
	return true, nil
}

// fetch asks for the blocks missing, a window of requests at a time, and
// stores each as it arrives: one goroutine reads the stream while this
// one checks and writes, and the source reads the next blocks meanwhile.
// freed is true when the source no longer holds one of them.
func (t *Target) fetch(l *link, a *history.Applier, missing []history.Hash) (fetched int, freed bool, err error) {
	if len(missing) == 0 {
		return 0, false, nil
	}
	type arrival struct {
		h     history.Hash
		data  []byte
		found bool
		err   error
	}
	arrivals := make(chan arrival, 2*fetchChunk)
	counts := make(chan int, (len(missing)+fetchChunk-1)/fetchChunk) // answers to read, per request sent
	closeCounts := sync.OnceFunc(func() { close(counts) })
	defer closeCounts()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(arrivals)
		for n := range counts {
			for ; n > 0; n-- {
				var v arrival
				body, err := l.recv(msgBlock)
				if err == nil {
					v.h, v.data, v.found, err = decodeBlock(body)
				}
				v.err = err
				select {
				case arrivals <- v:
				case <-stop:
					return
				}
				if err != nil {
					return
				}
			}
		}
	}()
	sent := 0 // blocks asked for
	for i, want := range missing {
		for !freed && sent < len(missing) && sent < i+fetchWindow*fetchChunk {
			chunk := missing[sent:min(sent+fetchChunk, len(missing))]
			if err := l.send(msgNeed, encodeHashes(chunk)); err != nil {
				return fetched, false, err
			}
			sent += len(chunk)
			counts <- len(chunk)
		}
		if i >= sent {
			break
		}
		v := <-arrivals
		switch {
		case v.err != nil:
			return fetched, false, v.err
		case v.h != want:
			return fetched, false, fmt.Errorf("%w: block %s sent for %s", errMalformed, v.h, want)
		case !v.found:
			freed = true
		case !freed:
			if err := a.PutBlock(v.h, v.data); err != nil {
				return fetched, false, err
			}
			fetched++
		}
	}
	closeCounts()
	if freed {
		// The answers to the requests out are read all the same, so the
		// stream stays in step for the next request.
		for v := range arrivals {
			if v.err != nil {
				return fetched, false, v.err
			}
		}
	}
	return fetched, freed, nil
}

// Verify compares the tree at the mirror's newest moment with the source's
// at the same transaction. progress, if set, is told how many paths have
// been compared.
func (t *Target) Verify(ctx context.Context, progress func(paths int64)) (*VerifyReport, error) {
	at, ok, err := t.store.Moment(history.Live)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("mirror: the mirror holds no moment yet: pull first")
	}
	l, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer l.c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.c.Close() })
	defer stop()
	if err := l.send(msgDigest, encodeU64s(uint64(at))); err != nil {
		return nil, err
	}
	rep := &VerifyReport{At: at}
	// The target's own walk runs beside the source's stream.
	type item struct {
		e   Entry
		err error
	}
	local := make(chan item, 256)
	go func() {
		defer close(local)
		err := Digest(ctx, t.store, at, func(e Entry) error {
			select {
			case local <- item{e: e}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil {
			select {
			case local <- item{err: err}:
			case <-ctx.Done():
			}
		}
	}()
	srcDone := false
	nextSrc := func() (Entry, bool, error) {
		if srcDone {
			return Entry{}, false, nil
		}
		l.c.SetReadDeadline(time.Now().Add(idleTimeout))
		typ, body, err := readMsg(l.r, maxMessage)
		if err != nil {
			return Entry{}, false, err
		}
		switch typ {
		case msgEntry:
			e, err := decodeEntry(body)
			return e, err == nil, err
		case msgDigested:
			v, err := decodeU64s(body, 2)
			if err != nil {
				return Entry{}, false, err
			}
			rep.SourceAt = history.TID(v[1])
			srcDone = true
			return Entry{}, false, nil
		case msgFailed:
			return Entry{}, false, fmt.Errorf("mirror: the source says: %s", decodeText(body))
		}
		return Entry{}, false, fmt.Errorf("%w: message type %d in a digest", errMalformed, typ)
	}
	nextDst := func() (Entry, bool, error) {
		it, ok := <-local
		if !ok {
			return Entry{}, false, nil
		}
		return it.e, it.err == nil, it.err
	}
	if err := compare(rep, nextSrc, nextDst, progress); err != nil {
		return nil, err
	}
	if rep.SourceAt != 0 && rep.SourceAt != at {
		rep.Note = fmt.Sprintf("the source has thinned %s and reads it as %s: differences may be its cleaner's", at, rep.SourceAt)
	}
	return rep, nil
}
