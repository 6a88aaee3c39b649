package sunrpc

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A Handler answers the calls of a connection.
type Handler interface {
	// Schedule tells where call c is answered, given what else the
	// connection has waiting.
	Schedule(c *Call, b Backlog) Mode
	// Answer appends the reply to c to reply, which holds the reply's
	// record mark and an accepted header with SUCCESS (HeaderLen bytes;
	// Accept and DenyAuth rewrite it), and returns it. With c.NoWait set
	// it may instead return ErrWouldBlock, having answered nothing: the
	// call is then answered again, by a goroutine of its own, with NoWait
	// unset. Answer may run on several goroutines at once.
	Answer(c *Call, reply []byte) ([]byte, error)
}

// ErrWouldBlock from Answer: the call would wait for the disk.
var ErrWouldBlock = errors.New("sunrpc: would wait for the disk")

// Mode is where a call is answered.
type Mode int

const (
	// Batch: the reader goroutine answers the call, with NoWait set, and
	// while another whole call is already buffered its reply waits, to go
	// out with the next ones in one writev. A call that would wait for
	// the disk goes to a goroutine of its own, and for a second after the
	// Backlog is DiskBound.
	Batch Mode = iota
	// Inline: the reader answers the call and sends its reply at once.
	Inline
	// Spawn: a goroutine of its own answers the call.
	Spawn
)

// Backlog is what a connection has waiting when a call is scheduled.
type Backlog struct {
	// More: another whole call is buffered already.
	More bool
	// DiskBound: a call of the last second would have waited for the
	// disk, so the calls after it likely will too, and should reach it
	// together rather than one by one.
	DiskBound bool
	raw       syscall.RawConn
}

// Waiting tells whether the client has sent more than this call: another
// whole call, or bytes not read yet.
func (b Backlog) Waiting() bool { return b.More || unread(b.raw) }

// MaxInflight bounds the calls of one connection being answered at once,
// and so the call records one connection holds: at most MaxInflight, each
// at most MaxRecord bytes (in practice a 1 MiB WRITE).
const MaxInflight = 16

// drainTimeout bounds how long the replies of the calls in flight when a
// connection is told to stop may take to reach a client that does not
// read them.
const drainTimeout = 10 * time.Second

// conn is one client connection being served.
type conn struct {
	c   net.Conn
	h   Handler
	log *slog.Logger

	raw     syscall.RawConn // to ask whether more calls wait to be read
	slots   chan struct{}   // one per call from before its record is read until its reply is written
	replies sync.WaitGroup  // calls whose reply is not written yet

	qmu     sync.Mutex    // guards queue, spare, writing
	queue   []queuedReply // replies waiting to be written
	spare   []queuedReply // the previous batch's slice, for the next
	writing bool          // a goroutine is writing the queue

	// broke is the first read or write error that was not the end of the
	// connection: ServeConn returns it for the caller to log, once.
	broke atomic.Pointer[error]
}

// note keeps err as what broke the connection, if it is the first.
func (cn *conn) note(err error) {
	cn.broke.CompareAndSwap(nil, &err)
}

// ServeConn answers the calls on c until the client closes it or ctx is
// done. Then it reads no more calls, lets the calls in flight finish and
// send their replies, closes c and returns; no goroutine of the
// connection remains. It returns the I/O error that broke the connection,
// if one did, and logs none itself.
//
// A hand-off to another goroutine costs more than a READ from the page
// cache, so the reader goroutine answers most calls itself and the Handler
// tells which not (Schedule). A call holds one of MaxInflight slots from
// before its record is read until its reply is written, so a client that
// sends faster than it reads its replies is held back by TCP, not by the
// server's memory.
func ServeConn(ctx context.Context, c net.Conn, h Handler, log *slog.Logger) error {
	cn := &conn{c: c, h: h, log: log, slots: make(chan struct{}, MaxInflight)}
	if sc, ok := c.(syscall.Conn); ok {
		cn.raw, _ = sc.SyscallConn()
	}
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		c.SetReadDeadline(time.Unix(1, 0)) // ends a read under way
		c.SetWriteDeadline(time.Now().Add(drainTimeout))
	})
	cn.readCalls(ctx)
	cn.flush()
	cn.replies.Wait()
	if !stop() {
		<-stopped
	}
	c.Close()
	if p := cn.broke.Load(); p != nil {
		return *p
	}
	return nil
}

// readCalls reads call records and answers them, or has them answered,
// until the connection ends or ctx is done.
func (cn *conn) readCalls(ctx context.Context) {
	br := bufio.NewReaderSize(cn.c, 64<<10)
	remote := cn.c.RemoteAddr()
	var diskBoundUntil time.Time
	for ctx.Err() == nil {
		if !recordBuffered(br) {
			cn.flush() // the next read may wait for the client
		}
		select {
		case cn.slots <- struct{}{}:
		default:
			cn.flush() // replies held back hold slots
			cn.slots <- struct{}{}
		}
		rb, err := readRecord(br)
		if err != nil {
			<-cn.slots
			if ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				cn.note(err)
			}
			return
		}
		start := time.Now()
		c := &Call{Start: start, Remote: remote, rec: rb}
		ok, err := decodeCall(*rb, c)
		if err != nil {
			putBuf(rb)
			<-cn.slots
			cn.log.Debug("sunrpc: not an RPC call: connection closed", "client", remote.String(), "err", err)
			return
		}
		cn.replies.Add(1)
		if !ok {
			reply := getBuf(smallBuf)
			*reply = rpcMismatch(*reply, c.Xid)
			putBuf(rb)
			cn.send(queuedReply{rec: *reply, pooled: reply}, true)
			continue
		}
		more := recordBuffered(br)
		switch cn.h.Schedule(c, Backlog{More: more, DiskBound: start.Before(diskBoundUntil), raw: cn.raw}) {
		case Spawn:
			go cn.answer(c, true)
		case Inline:
			cn.answer(c, true)
		default:
			c.NoWait = true
			if !cn.answer(c, !more) {
				c.NoWait = false
				go cn.answer(c, true)
				diskBoundUntil = time.Now().Add(time.Second)
			}
		}
	}
}

// answer answers a call; its reply goes out now, or with flush false
// waits for the next one that does. It reports false, having answered
// nothing, for a call with NoWait set that would wait for the disk.
func (cn *conn) answer(c *Call, flush bool) bool {
	pooled := getBuf(smallBuf)
	reply, err := cn.h.Answer(c, appendHeader(*pooled, c.Xid))
	if err == ErrWouldBlock {
		putBuf(pooled)
		return false
	}
	if err != nil {
		// A Handler's own failure: the call is answered all the same.
		cn.log.Error("sunrpc: call failed", "prog", c.Prog, "proc", c.Proc, "err", err)
		reply = Accept(appendHeader((*pooled)[:0], c.Xid), SystemErr)
		if c.Tail != nil {
			c.Tail.Release()
			c.Tail = nil
		}
	}
	putBuf(c.rec) // Cred and Args pointed into it
	c.rec = nil
	n := len(reply) - 4
	if c.Tail != nil {
		n += c.Tail.Len() + len(padding(c.Tail.Len()))
	}
	binary.BigEndian.PutUint32(reply, uint32(n)|lastFragment)
	if cap(reply) != cap(*pooled) || &reply[:1][0] != &(*pooled)[:1][0] {
		// The reply outgrew the pooled buffer.
		putBuf(pooled)
		pooled = nil
	}
	cn.send(queuedReply{rec: reply, pooled: pooled, tail: c.Tail}, flush)
	c.Tail = nil
	return true
}

// flush writes the replies held back, unless a goroutine is at it.
func (cn *conn) flush() { cn.send(queuedReply{}, true) }

// A queuedReply waits to be written: the record's bytes, the pooled
// buffer they live in, and the data that ends the record.
type queuedReply struct {
	rec    []byte
	pooled *[]byte
	tail   Tail
}

// xdrPad pads opaque data to a multiple of four bytes.
var xdrPad [3]byte

func padding(n int) []byte { return xdrPad[:(4-n%4)%4] }

// send writes a reply (with flush false, only queues it), or leaves it to
// the goroutine writing already, which takes every reply queued meanwhile
// into its next write: replies that are ready together go out in one
// system call (each costs about as much as a small READ's whole work).
// Once a reply is out its buffer goes back to the pool and its call's
// slot is freed.
func (cn *conn) send(q queuedReply, flush bool) {
	cn.qmu.Lock()
	if q.rec != nil {
		cn.queue = append(cn.queue, q)
	}
	if cn.writing || !flush {
		cn.qmu.Unlock()
		return
	}
	cn.writing = true
	for len(cn.queue) > 0 {
		batch := cn.queue
		cn.queue = cn.spare[:0]
		cn.qmu.Unlock()
		bufs := make(net.Buffers, 0, len(batch))
		for _, q := range batch {
			bufs = append(bufs, q.rec)
			if q.tail != nil {
				bufs = append(bufs, q.tail.Buffers()...)
				bufs = append(bufs, padding(q.tail.Len()))
			}
		}
		if _, err := bufs.WriteTo(cn.c); err != nil {
			cn.note(err)
			cn.c.Close() // ends readCalls
		}
		for i, q := range batch {
			putBuf(q.pooled)
			if q.tail != nil {
				q.tail.Release()
			}
			batch[i] = queuedReply{}
			<-cn.slots
			cn.replies.Done()
		}
		cn.qmu.Lock()
		cn.spare = batch
	}
	cn.writing = false
	cn.qmu.Unlock()
}
