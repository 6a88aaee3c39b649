package mirror

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asof/asof/history"
)

// SourceOptions configure a Source.
type SourceOptions struct {
	// Token is the shared secret a target proves it holds.
	Token []byte
	// Logger gets one line per target refused, connected and gone.
	Logger *slog.Logger
}

// A Source serves a store's transactions to the targets that pull them,
// one connection at a time (ServeConn); who may connect, and draining at
// shutdown, are the caller's (the server's connection lifecycle). It keeps
// nothing for a target but its connection: a target asks from the newest
// transaction it holds, each batch is read from the log under its lock and
// sent without it, and a target that stops reading stalls its own
// connection only (writes time out, and the connection goes).
type Source struct {
	store *history.Store
	opts  SourceOptions

	mu    sync.Mutex // guards peers
	peers map[*peer]struct{}
	sent  atomic.Int64 // bytes sent to every target since the start
}

// Timeouts of a target's connection: a handshake must finish quickly, a
// target asks again within idleTimeout (its pulls wait at most a few
// seconds for new transactions), and a write that cannot go out within
// writeTimeout means the target stopped reading.
const (
	handshakeTimeout = 10 * time.Second
	idleTimeout      = 2 * time.Minute
	writeTimeout     = time.Minute
	maxWait          = 10 * time.Second
)

// NewSource serves s.
func NewSource(s *history.Store, opts SourceOptions) *Source {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Source{store: s, opts: opts, peers: map[*peer]struct{}{}}
}

// peer is one target's connection, and what status shows of it.
type peer struct {
	conn      net.Conn
	name      string
	since     time.Time
	position  atomic.Uint64 // the newest transaction it said it holds
	sent      atomic.Int64  // bytes sent to it
	lastPull  atomic.Int64  // unix ns of its last request
	addr      string
	r         *bufio.Reader
	w         *bufio.Writer
	batchSize int
}

// ServeConn serves one target until it closes the connection or ctx is
// done; then it answers no new request, finishes the one in flight (a
// pull waiting for a commit answers at once) and returns. It returns the
// I/O error that broke the connection, if one did, and logs it not: a
// target refused (the handshake failed) is logged here, and is no error.
func (src *Source) ServeConn(ctx context.Context, c net.Conn) error {
	defer c.Close()
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		c.SetReadDeadline(time.Unix(1, 0)) // ends a read under way
	})
	defer func() {
		if !stop() {
			<-stopped
		}
	}()
	p := &peer{conn: c, addr: c.RemoteAddr().String(), r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(progressWriter{c}, 256<<10), since: time.Now()}
	if err := src.handshake(p); err != nil {
		if ctx.Err() == nil {
			src.opts.Logger.Warn("mirror: refused a target", "target", p.addr, "reason", err.Error())
		}
		return nil
	}
	src.mu.Lock()
	src.peers[p] = struct{}{}
	src.mu.Unlock()
	defer func() {
		src.mu.Lock()
		delete(src.peers, p)
		src.mu.Unlock()
	}()
	src.opts.Logger.Info("mirror: a target connected", "target", p.name, "addr", p.addr)
	err := src.session(ctx, p)
	src.opts.Logger.Info("mirror: a target went away", "target", p.name, "addr", p.addr,
		"position", history.TID(p.position.Load()), "sent_bytes", p.sent.Load())
	if ctx.Err() != nil || isEOF(err) {
		return nil
	}
	return err
}

func errText(err error) string {
	if err == nil || isEOF(err) {
		return "it closed the connection"
	}
	return err.Error()
}

func mac(token []byte, label string, a, b []byte) []byte {
	m := hmac.New(sha256.New, token)
	m.Write([]byte(label))
	m.Write(a)
	m.Write(b)
	return m.Sum(nil)
}

const (
	labelTarget = "asof mirror target\x00"
	labelSource = "asof mirror source\x00"
)

// handshake checks the target's proof of the token. A target that fails
// learns only that it failed: the proof is over a fresh nonce of the
// source's, so nothing it sends or receives helps it guess.
func (src *Source) handshake(p *peer) error {
	p.conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer p.conn.SetDeadline(time.Time{})
	nonce := make([]byte, nonceLen)
	rand.Read(nonce)
	if err := writeMsg(p.w, msgHello, hello{version: Version, nonce: nonce}.encode()); err != nil {
		return err
	}
	if err := p.w.Flush(); err != nil {
		return err
	}
	typ, body, err := readMsg(p.r, maxHandshake)
	if err != nil {
		if isEOF(err) {
			return errors.New("it closed the connection during the handshake")
		}
		return err
	}
	if typ != msgAuth {
		return fmt.Errorf("not an asof mirror target (message type %d)", typ)
	}
	a, err := decodeAuth(body)
	if err != nil {
		return err
	}
	if a.version != Version {
		writeMsg(p.w, msgRefused, encodeText(fmt.Sprintf("the source speaks mirror stream version %d, the target %d: run the same asof on both", Version, a.version)))
		p.w.Flush()
		return fmt.Errorf("it speaks stream version %d, this source %d", a.version, Version)
	}
	if !hmac.Equal(a.mac, mac(src.opts.Token, labelTarget, nonce, a.nonce)) {
		writeMsg(p.w, msgRefused, encodeText("authentication failed: the target's token is not the source's"))
		p.w.Flush()
		return errors.New("wrong token")
	}
	p.name = a.name
	w := welcome{mac: mac(src.opts.Token, labelSource, a.nonce, nonce), lineage: src.store.Lineage(), last: src.store.LastTID()}
	if err := writeMsg(p.w, msgWelcome, w.encode()); err != nil {
		return err
	}
	return p.w.Flush()
}

func (src *Source) session(ctx context.Context, p *peer) error {
	for {
		p.conn.SetReadDeadline(time.Now().Add(idleTimeout))
		if ctx.Err() != nil {
			return nil // after the deadline above, so that a cancel is never undone by it
		}
		typ, body, err := readMsg(p.r, maxMessage)
		if err != nil {
			return err
		}
		p.lastPull.Store(time.Now().UnixNano())
		switch typ {
		case msgPull:
			err = src.batch(ctx, p, body)
		case msgNeed:
			err = src.blocks(p, body)
		case msgHave:
			err = src.has(p, body)
		case msgDigest:
			err = src.digest(ctx, p, body)
		default:
			err = fmt.Errorf("%w: unexpected message type %d", errMalformed, typ)
		}
		if err != nil {
			return err
		}
	}
}

// send writes a message; p.w's progressWriter keeps the deadline.
func (src *Source) send(p *peer, typ byte, body []byte) error {
	p.sent.Add(int64(len(body) + 5))
	src.sent.Add(int64(len(body) + 5))
	return writeMsg(p.w, typ, body)
}

// sendBlock writes a block message without copying the block into a
// message body first.
func (src *Source) sendBlock(p *peer, h history.Hash, data []byte, found bool) error {
	hdr := encodeBlock(h, nil, found)
	n := len(hdr) + len(data)
	p.sent.Add(int64(n + 5))
	src.sent.Add(int64(n + 5))
	var pre [5]byte
	pre[0] = msgBlock
	binary.BigEndian.PutUint32(pre[1:], uint32(n))
	for _, b := range [][]byte{pre[:], hdr, data} {
		if _, err := p.w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

func (src *Source) flush(p *peer) error {
	return p.w.Flush()
}

func (src *Source) fail(p *peer, err error) error {
	if serr := src.send(p, msgFailed, encodeText(err.Error())); serr != nil {
		return serr
	}
	return src.flush(p)
}

func (src *Source) batch(ctx context.Context, p *peer, body []byte) error {
	req, err := decodePull(body)
	if err != nil {
		return err
	}
	p.position.Store(uint64(req.since))
	if req.waitMs > 0 {
		// A target that is up to date waits here for the next commit, so
		// that it follows within a poll of it.
		deadline := time.Now().Add(min(time.Duration(req.waitMs)*time.Millisecond, maxWait))
		for src.store.LastTID() <= req.since && time.Now().Before(deadline) && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	frames := int(min(max(req.maxFrames, 1), 100000))
	bytes := int(min(max(req.maxBytes, 64<<10), 256<<20))
	b, err := src.store.MirrorRead(req.since, frames, bytes)
	if err != nil {
		return src.fail(p, err)
	}
	if err := src.send(p, msgBatch, encodeBatch(b)); err != nil {
		return err
	}
	return src.flush(p)
}

func (src *Source) blocks(p *peer, body []byte) error {
	hs, err := decodeHashes(body)
	if err != nil {
		return err
	}
	for _, h := range hs {
		data, err := src.store.ReadBlock(h)
		found := err == nil
		if err != nil && !errors.Is(err, history.ErrNotFound) {
			return src.fail(p, err)
		}
		if err := src.sendBlock(p, h, data, found); err != nil {
			return err
		}
	}
	return src.flush(p)
}

func (src *Source) has(p *peer, body []byte) error {
	ks, err := decodeRecords(body)
	if err != nil {
		return err
	}
	have, err := src.store.HasRecords(ks)
	if err != nil {
		return src.fail(p, err)
	}
	if err := src.send(p, msgHas, encodeBits(have)); err != nil {
		return err
	}
	return src.flush(p)
}

func (src *Source) digest(ctx context.Context, p *peer, body []byte) error {
	v, err := decodeU64s(body, 1)
	if err != nil {
		return err
	}
	at := history.TID(v[0])
	read, ok, err := src.store.Moment(at)
	if err != nil {
		return src.fail(p, err)
	}
	if !ok {
		read = at
	}
	err = Digest(ctx, src.store, at, func(e Entry) error {
		return src.send(p, msgEntry, encodeEntry(e))
	})
	if err != nil {
		return src.fail(p, err)
	}
	if err := src.send(p, msgDigested, encodeU64s(uint64(at), uint64(read))); err != nil {
		return err
	}
	return src.flush(p)
}

// PeerStatus is one target pulling, as the source sees it.
type PeerStatus struct {
	Name      string        `json:"name"`
	Addr      string        `json:"addr"`
	Connected time.Time     `json:"connected"`
	Position  history.TID   `json:"position"` // the newest transaction it holds
	Lag       time.Duration `json:"lag_ns"`   // how far its newest is behind the source's
	SentBytes int64         `json:"sent_bytes"`
	LastPull  time.Time     `json:"last_pull"`
}

// SourceStatus is what `asof mirror status` shows on a source.
type SourceStatus struct {
	Lineage string       `json:"lineage"`
	Last    history.TID  `json:"last"`
	Targets []PeerStatus `json:"targets"`
}

// SentBytes is how many bytes went to targets since the start.
func (src *Source) SentBytes() int64 { return src.sent.Load() }

// Status lists the targets connected now.
func (src *Source) Status() SourceStatus {
	st := SourceStatus{Lineage: src.store.Lineage(), Last: src.store.LastTID(), Targets: []PeerStatus{}}
	src.mu.Lock()
	defer src.mu.Unlock()
	for p := range src.peers {
		pos := history.TID(p.position.Load())
		st.Targets = append(st.Targets, PeerStatus{Name: p.name, Addr: p.addr, Connected: p.since, Position: pos,
			Lag: lag(st.Last, pos), SentBytes: p.sent.Load(), LastPull: time.Unix(0, p.lastPull.Load())})
	}
	return st
}

// lag is how far behind last a position is, as time.
func lag(last, pos history.TID) time.Duration {
	if pos >= last {
		return 0
	}
	return time.Duration(last - pos)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
