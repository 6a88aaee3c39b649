package fs

import "time"

// Observer is told of every request a protocol adapter serves, so that
// both adapters report the same metrics the same way. The server's
// Prometheus exporter implements it; nil observes nothing.
type Observer interface {
	// Request: protocol ("nfs", "9p"), operation name, when it started,
	// and its outcome.
	Request(protocol, op string, start time.Time, err error)
	// Bytes counts file data read and written.
	Bytes(protocol string, read, written int)
}

// NopObserver observes nothing.
type NopObserver struct{}

func (NopObserver) Request(string, string, time.Time, error) {}
func (NopObserver) Bytes(string, int, int)                   {}
