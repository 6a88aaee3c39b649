// Package volume is where sealed packs live: a directory on some disk, or a
// bucket (with an optional prefix) on an S3-compatible object store. The
// pack store above it decides which packs go where and keeps the index of
// them; a volume only stores whole packs under their sequence numbers and
// gives byte ranges of them back.
//
// A pack is written once, whole, from a local file, and never changed:
// Put returns only once the copy is durable and checked, so the caller may
// then point the index at it and delete the source. Reads are by byte
// range; the caller checks every block it reads (its header and CRC, and
// on verify its SHA-256), so a volume never needs to be trusted for
// content, only for saying when it could not answer.
//
// Every volume carries a label naming the store it belongs to and its id
// in that store, written once when it is added and checked whenever it is
// opened: a volume of another store (a mistyped path or bucket) is refused
// rather than read or written.
package volume

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
)

// Volume is one place packs are kept. Methods are safe for concurrent use.
type Volume interface {
	// Kind is "dir" or "s3".
	Kind() string
	// String says where the volume is, for messages and listings (a path,
	// or s3://bucket/prefix at the endpoint); never a credential.
	String() string

	// ReadLabel returns the volume's label, ErrNoLabel if it has none.
	ReadLabel(ctx context.Context) (Label, error)
	// WriteLabel writes the label durably. Claim is the careful way.
	WriteLabel(ctx context.Context, l Label) error

	// Put stores the local file src as pack seq, whole, and returns once
	// the copy is durable and checked against the source. A pack already
	// there under seq (a Put interrupted after its copy landed) is
	// replaced.
	Put(ctx context.Context, seq uint32, src string) error
	// ReadAt reads len(p) bytes of pack seq at off, as io.ReaderAt does.
	// A pack the volume does not hold is ErrNoPack; a store it cannot
	// reach is ErrUnavailable (which is also syscall.EIO).
	ReadAt(ctx context.Context, seq uint32, p []byte, off int64) (int, error)
	// Stream reads pack seq whole, in order, around any cache: for scans
	// (verify, rebuild) that would otherwise push everything else out.
	Stream(ctx context.Context, seq uint32) (io.ReadCloser, error)
	// Delete removes pack seq; a pack already gone is no error, so an
	// interrupted cleanup can simply run again.
	Delete(ctx context.Context, seq uint32) error
	// List is every pack the volume holds, in sequence order: what the
	// index does not name is left over from a crash, for the caller to
	// delete.
	List(ctx context.Context) ([]Pack, error)
	// Free is how many more bytes of packs the volume can take, or
	// Unbounded (an object store).
	Free(ctx context.Context) (int64, error)

	Close() error
}

// Pack is a pack a volume holds.
type Pack struct {
	Seq  uint32
	Size int64
}

// Unbounded is the free space of a volume that reports no limit.
const Unbounded int64 = -1

// Place picks the volume a new pack goes to among writable candidates,
// given each one's Free: the one with the most free space, an unbounded
// one (an object store) before any directory, the first on a tie. It
// spreads packs over disks as they fill, and once a store has an object
// store volume the packs go there, which is what adding one is for. It
// returns -1 when there is no candidate.
func Place(free []int64) int {
	best := -1
	for i, f := range free {
		switch {
		case best < 0:
			best = i
		case free[best] == Unbounded:
		case f == Unbounded || f > free[best]:
			best = i
		}
	}
	return best
}

// PackName is the name of pack seq on every volume: the same name the
// data directory's packs have, so a directory of packs is a volume as it is.
func PackName(seq uint32) string { return fmt.Sprintf("%08x.pack", seq) }

// parsePackName is PackName's inverse; other names are not packs.
func parsePackName(name string) (uint32, bool) {
	hex, ok := strings.CutSuffix(name, ".pack")
	if !ok || len(hex) != 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 32)
	return uint32(v), err == nil
}

// LabelName is the label's file or object name on a volume.
const LabelName = "LABEL"

// Label says which store a volume belongs to and which of its volumes it
// is.
type Label struct {
	Store  string // the store's id (the store line of its LINEAGE file)
	Volume uint16 // the volume's id in the store: the number pack locations name
}

var (
	// ErrNoLabel: the volume has no label (it was never added).
	ErrNoLabel = errors.New("volume has no label")
	// ErrForeign: the volume's label names another store, or another
	// volume of this one.
	ErrForeign = errors.New("volume belongs elsewhere")
	// ErrNoPack: the volume does not hold the pack asked for. Not
	// os.ErrNotExist, which a file server would answer as ENOENT: a
	// missing pack is damage, an I/O error to the client.
	ErrNoPack = errors.New("no such pack on the volume")
	// ErrUnavailable: the volume could not be reached (or did not answer
	// in time, after retries). It is syscall.EIO too, which is what a
	// file server answers.
	ErrUnavailable = errors.New("volume unavailable")
)

// unavailable is an ErrUnavailable that names its cause. The cause is
// text only: a network error's own errno (ECONNREFUSED) must not become
// the client's.
type unavailable struct {
	where string
	cause string
}

func (e *unavailable) Error() string {
	return fmt.Sprintf("volume %s unavailable: %s", e.where, e.cause)
}

func (e *unavailable) Is(target error) bool { return target == ErrUnavailable }

func (e *unavailable) Unwrap() error { return syscall.EIO }

const labelMagic = "asof volume"

func (l Label) valid() error {
	if l.Store == "" || strings.ContainsFunc(l.Store, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("volume: bad store id %q in label", l.Store)
	}
	return nil
}

// encode is the label's text: a line that says what the file is, then
// the store and the volume.
func (l Label) encode() []byte {
	return fmt.Appendf(nil, "%s\nstore %s\nvolume %d\n", labelMagic, l.Store, l.Volume)
}

func decodeLabel(b []byte, where string) (Label, error) {
	var l Label
	sc := bufio.NewScanner(bytes.NewReader(b))
	lines := 0
	seen := map[string]bool{}
	for sc.Scan() {
		line := sc.Text()
		lines++
		if lines == 1 {
			if line != labelMagic {
				return Label{}, fmt.Errorf("volume %s: %s is not a volume label", where, LabelName)
			}
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "store":
			l.Store = v
		case "volume":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return Label{}, fmt.Errorf("volume %s: bad volume id %q in %s", where, v, LabelName)
			}
			l.Volume = uint16(n)
		default:
			continue // a later build's field
		}
		seen[k] = true
	}
	if !seen["store"] || !seen["volume"] {
		return Label{}, fmt.Errorf("volume %s: %s is incomplete", where, LabelName)
	}
	if err := l.valid(); err != nil {
		return Label{}, fmt.Errorf("volume %s: %w", where, err)
	}
	return l, nil
}

// Check opens a volume that the store already has: its label must be
// want. A volume with no label, or another's, is refused with a message
// that says whose it is.
func Check(ctx context.Context, v Volume, want Label) error {
	got, err := v.ReadLabel(ctx)
	if errors.Is(err, ErrNoLabel) {
		return fmt.Errorf("volume %s has no label: it is not volume %d of this store (was it replaced, or not mounted?): %w", v, want.Volume, ErrForeign)
	}
	if err != nil {
		return err
	}
	return match(v, got, want)
}

func match(v Volume, got, want Label) error {
	if got.Store != want.Store {
		return fmt.Errorf("volume %s belongs to another store (%s), not this one (%s): %w", v, got.Store, want.Store, ErrForeign)
	}
	if got.Volume != want.Volume {
		return fmt.Errorf("volume %s is this store's volume %d, not volume %d: %w", v, got.Volume, want.Volume, ErrForeign)
	}
	return nil
}

// Claim makes v volume l of a store, when it is added: it writes the
// label on a volume that has none and holds no packs, and accepts one
// that already carries l (an add that was interrupted and is run again).
// A volume labelled for another store, or holding packs without a label,
// is refused and left as it is.
func Claim(ctx context.Context, v Volume, l Label) error {
	if err := l.valid(); err != nil {
		return err
	}
	got, err := v.ReadLabel(ctx)
	switch {
	case err == nil:
		return match(v, got, l)
	case !errors.Is(err, ErrNoLabel):
		return err
	}
	packs, err := v.List(ctx)
	if err != nil {
		return err
	}
	if len(packs) > 0 {
		return fmt.Errorf("volume %s holds %d packs but no label: it is not a volume of this store: %w", v, len(packs), ErrForeign)
	}
	return v.WriteLabel(ctx, l)
}
