package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sort"
	"strings"

	"github.com/asof/asof/history"
)

// Verification compares the tree a target shows at its newest moment with
// the source's at the same transaction: both walk it in the same order
// (depth first, names in byte order) and give each path a digest of what
// reading it returns — its attributes, symlink target, extended
// attributes and data, read through the engine, so damage that a checksum
// catches is named as such. The target merges the source's stream with
// its own and names every path that differs.

// Entry is one path of a tree as of a moment.
type Entry struct {
	Path    string
	Kind    history.Kind
	Sum     [sha256.Size]byte
	Problem string // why it could not be read, if it could not
}

// Digest walks the tree as of at and calls fn with every path, in order.
func Digest(ctx context.Context, s *history.Store, at history.TID, fn func(Entry) error) error {
	w := walker{s: s, at: at, fn: fn, ctx: ctx, data: map[history.ObjID][sha256.Size]byte{}}
	return w.visit("/", history.RootID, history.KindDir)
}

type walker struct {
	s    *history.Store
	at   history.TID
	fn   func(Entry) error
	ctx  context.Context
	data map[history.ObjID][sha256.Size]byte // data digests of files seen (hard links)
}

func (w *walker) visit(path string, obj history.ObjID, kind history.Kind) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	e := Entry{Path: path, Kind: kind}
	sum, err := w.sum(obj)
	if err != nil {
		e.Problem = err.Error()
	} else {
		e.Sum = sum
	}
	if err := w.fn(e); err != nil {
		return err
	}
	if kind != history.KindDir || e.Problem != "" {
		return nil
	}
	type child struct {
		name string
		obj  history.ObjID
		kind history.Kind
	}
	var kids []child
	err = w.s.ReadDir(obj, "", w.at, func(name string, c history.ObjID, k history.Kind) bool {
		if name != ".." {
			kids = append(kids, child{name, c, k})
		}
		return true
	})
	if err != nil {
		return w.fn(Entry{Path: path, Kind: kind, Problem: "list: " + err.Error()})
	}
	for _, k := range kids {
		p := path + "/" + k.name
		if path == "/" {
			p = "/" + k.name
		}
		if err := w.visit(p, k.obj, k.kind); err != nil {
			return err
		}
	}
	return nil
}

// sum digests what reading obj returns.
func (w *walker) sum(obj history.ObjID) ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	ino, err := w.s.Inode(obj, w.at)
	if err != nil {
		return out, err
	}
	h := sha256.New()
	put := func(vs ...uint64) {
		for _, v := range vs {
			h.Write(binary.BigEndian.AppendUint64(nil, v))
		}
	}
	put(uint64(ino.Kind), uint64(ino.Mode), uint64(ino.Uid), uint64(ino.Gid), uint64(ino.Nlink), ino.Size, ino.Rdev,
		uint64(ino.Atime), uint64(ino.Mtime), uint64(ino.Ctime), uint64(ino.Btime))
	switch ino.Kind {
	case history.KindSymlink:
		target, err := w.s.Readlink(obj, w.at)
		if err != nil {
			return out, err
		}
		put(uint64(len(target)))
		h.Write([]byte(target))
	case history.KindFile:
		d, ok := w.data[obj]
		if !ok {
			if d, err = w.fileData(obj, ino.Size); err != nil {
				return out, err
			}
			w.data[obj] = d
		}
		h.Write(d[:])
	}
	names, err := w.s.Xattrs(obj, w.at)
	if err != nil {
		return out, err
	}
	sort.Strings(names)
	for _, n := range names {
		v, err := w.s.Xattr(obj, n, w.at)
		if err != nil {
			return out, err
		}
		put(uint64(len(n)), uint64(len(v)))
		h.Write([]byte(n))
		h.Write(v)
	}
	copy(out[:], h.Sum(nil))
	return out, nil
}

func (w *walker) fileData(obj history.ObjID, size uint64) ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	h := sha256.New()
	if err := readFile(w.s, obj, size, w.at, h); err != nil {
		return out, err
	}
	copy(out[:], h.Sum(nil))
	return out, nil
}

func readFile(s *history.Store, obj history.ObjID, size uint64, at history.TID, h hash.Hash) error {
	buf := make([]byte, 1<<20)
	for off := uint64(0); off < size; {
		n, err := s.ReadAt(obj, buf[:min(uint64(len(buf)), size-off)], int64(off), at)
		if err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		if n == 0 {
			return fmt.Errorf("read at %d: file ends before its size %d", off, size)
		}
		h.Write(buf[:n])
		off += uint64(n)
	}
	return nil
}

// pathLess orders paths as the walk emits them: component by component,
// each in byte order.
func pathLess(a, b string) bool {
	as, bs := strings.Split(strings.TrimPrefix(a, "/"), "/"), strings.Split(strings.TrimPrefix(b, "/"), "/")
	if a == "/" {
		as = nil
	}
	if b == "/" {
		bs = nil
	}
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] != bs[i] {
			return as[i] < bs[i]
		}
	}
	return len(as) < len(bs)
}

// Difference is one path where a target and its source disagree.
type Difference struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// VerifyReport is what verification found.
type VerifyReport struct {
	At          history.TID  `json:"at"`          // the moment compared
	SourceAt    history.TID  `json:"source_at"`   // the moment the source read it as
	Paths       int64        `json:"paths"`       // paths compared
	Differences []Difference `json:"differences"` // empty when the trees are the same
	Note        string       `json:"note,omitempty"`
}

// OK reports whether the trees are the same.
func (r *VerifyReport) OK() bool { return len(r.Differences) == 0 }

// compare merges two ordered entry streams, naming every difference.
// next* return ok false at the end of their stream.
func compare(rep *VerifyReport, nextSrc, nextDst func() (Entry, bool, error), progress func(n int64)) error {
	s, sok, err := nextSrc()
	if err != nil {
		return err
	}
	d, dok, err := nextDst()
	if err != nil {
		return err
	}
	diff := func(path, reason string) {
		if len(rep.Differences) < 10000 {
			rep.Differences = append(rep.Differences, Difference{path, reason})
		}
	}
	for sok || dok {
		rep.Paths++
		if progress != nil && rep.Paths%1024 == 0 {
			progress(rep.Paths)
		}
		switch {
		case dok && (!sok || pathLess(d.Path, s.Path)):
			diff(d.Path, "only on the target")
			if d, dok, err = nextDst(); err != nil {
				return err
			}
			continue
		case sok && (!dok || pathLess(s.Path, d.Path)):
			diff(s.Path, "only on the source")
			if s, sok, err = nextSrc(); err != nil {
				return err
			}
			continue
		}
		switch {
		case d.Problem != "":
			diff(d.Path, "damaged on the target: "+d.Problem)
		case s.Problem != "":
			diff(s.Path, "damaged on the source: "+s.Problem)
		case s.Kind != d.Kind:
			diff(s.Path, fmt.Sprintf("a %s on the source, a %s on the target", s.Kind, d.Kind))
		case s.Sum != d.Sum:
			diff(s.Path, "content or attributes differ")
		}
		if s, sok, err = nextSrc(); err != nil {
			return err
		}
		if d, dok, err = nextDst(); err != nil {
			return err
		}
	}
	return nil
}
