package mirror

import (
	"context"
	"io"
	"net"
	"time"

	"golang.org/x/time/rate"
)

// A pacedReader reads no faster than its limiter allows: a target with a
// bandwidth limit reads its connection at that rate, and TCP's flow
// control holds the source to it, so the limit needs nothing of the source
// and a source serves targets of every rate alike.
type pacedReader struct {
	ctx context.Context
	r   io.Reader
	lim *rate.Limiter
}

// newPacedReader paces r at bytesPerSec, with bursts of a tenth of a
// second (at least 64 KiB, so a block message is not cut into many waits).
func newPacedReader(ctx context.Context, r io.Reader, bytesPerSec int64) *pacedReader {
	burst := max(bytesPerSec/10, 64<<10)
	return &pacedReader{ctx: ctx, r: r, lim: rate.NewLimiter(rate.Limit(bytesPerSec), int(burst))}
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(b) > p.lim.Burst() {
		b = b[:p.lim.Burst()]
	}
	n, err := p.r.Read(b)
	if n > 0 {
		if werr := p.lim.WaitN(p.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// writePiece is how much of a message the source writes under one
// deadline.
const writePiece = 64 << 10

// A progressWriter gives every piece of a write a deadline of its own: a
// target that reads slowly (a bandwidth limit, a thin link) keeps its
// connection however long a large batch takes, and one that stops reading
// loses it after writeTimeout with nothing of the store held meanwhile.
type progressWriter struct{ c net.Conn }

func (w progressWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), writePiece)
		w.c.SetWriteDeadline(time.Now().Add(writeTimeout))
		m, err := w.c.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}
