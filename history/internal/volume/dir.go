package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/asof/asof/history/internal/fileio"
	"golang.org/x/sys/unix"
)

// Dir is a volume that is a directory on a local file system. Packs are
// files named PackName(seq); the pack store may map them and read them
// in place (Path).
type Dir struct {
	dir string
}

// tmpSuffix marks a pack being copied in: renamed to its name once
// durable, removed at open if a crash left it.
const tmpSuffix = ".tmp"

// OpenDir opens the directory volume at path, which must exist: a
// missing directory (a disk not mounted) must not quietly become an empty
// volume. Copies a crash interrupted are removed.
func OpenDir(path string) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", path, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", abs, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("volume %s: not a directory", abs)
	}
	ents, err := os.ReadDir(abs)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", abs, err)
	}
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), tmpSuffix); ok {
			if _, pack := parsePackName(n); pack {
				if err := os.Remove(filepath.Join(abs, e.Name())); err != nil {
					return nil, fmt.Errorf("volume %s: remove an interrupted copy: %w", abs, err)
				}
			}
		}
	}
	return &Dir{dir: abs}, nil
}

func (d *Dir) Kind() string   { return "dir" }
func (d *Dir) String() string { return d.dir }

// Path is where pack seq's file is.
func (d *Dir) Path(seq uint32) string { return filepath.Join(d.dir, PackName(seq)) }

func (d *Dir) ReadLabel(ctx context.Context) (Label, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, LabelName))
	if errors.Is(err, os.ErrNotExist) {
		return Label{}, ErrNoLabel
	}
	if err != nil {
		return Label{}, fmt.Errorf("volume %s: read label: %w", d.dir, err)
	}
	return decodeLabel(b, d.dir)
}

func (d *Dir) WriteLabel(ctx context.Context, l Label) error {
	if err := l.valid(); err != nil {
		return err
	}
	if err := fileio.WriteAtomic(filepath.Join(d.dir, LabelName), l.encode()); err != nil {
		return fmt.Errorf("volume %s: write label: %w", d.dir, err)
	}
	return nil
}

// Put copies src in beside its final name, fsyncs it, renames it into
// place and fsyncs the directory: a crash leaves either no pack (and a
// temporary file OpenDir removes) or the whole pack. The copy is then
// checked to have src's size; its content was written from src by the
// kernel (copy_file_range where it can), and the blocks' own checksums
// are checked on every read.
func (d *Dir) Put(ctx context.Context, seq uint32, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("volume %s: put pack %d: %w", d.dir, seq, err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("volume %s: put pack %d: %w", d.dir, seq, err)
	}
	name := d.Path(seq)
	tmp := name + tmpSuffix
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("volume %s: put pack %d: %w", d.dir, seq, err)
	}
	fail := func(err error) error {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("volume %s: put pack %d: %w", d.dir, seq, err)
	}
	n, err := io.Copy(out, in)
	if err != nil {
		return fail(err)
	}
	if n != st.Size() {
		return fail(fmt.Errorf("copied %d bytes of %d (the source changed?)", n, st.Size()))
	}
	if err := out.Sync(); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("volume %s: put pack %d: %w", d.dir, seq, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("volume %s: put pack %d: %w", d.dir, seq, err)
	}
	if err := syncDir(d.dir); err != nil {
		return err
	}
	if got, err := os.Stat(name); err != nil || got.Size() != st.Size() {
		return fmt.Errorf("volume %s: put pack %d: the copy is not %d bytes (%v)", d.dir, seq, st.Size(), err)
	}
	return nil
}

func (d *Dir) open(seq uint32) (*os.File, error) {
	f, err := os.Open(d.Path(seq))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: pack %d: %w", d.dir, seq, ErrNoPack)
	}
	if err != nil {
		return nil, fmt.Errorf("volume %s: pack %d: %w", d.dir, seq, err)
	}
	return f, nil
}

// ReadAt opens the pack for each call: the pack store reads directory
// volumes through its own mappings (Path), so this is for the rare
// reader that does not.
func (d *Dir) ReadAt(ctx context.Context, seq uint32, p []byte, off int64) (int, error) {
	f, err := d.open(seq)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("volume %s: read pack %d: %w", d.dir, seq, err)
	}
	return n, err
}

func (d *Dir) Stream(ctx context.Context, seq uint32) (io.ReadCloser, error) {
	return d.open(seq)
}

func (d *Dir) Delete(ctx context.Context, seq uint32) error {
	if err := os.Remove(d.Path(seq)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("volume %s: delete pack %d: %w", d.dir, seq, err)
	}
	return syncDir(d.dir)
}

func (d *Dir) List(ctx context.Context) ([]Pack, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("volume %s: list packs: %w", d.dir, err)
	}
	var packs []Pack
	for _, e := range ents {
		seq, ok := parsePackName(e.Name())
		if !ok {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: list packs: %w", d.dir, err)
		}
		packs = append(packs, Pack{Seq: seq, Size: info.Size()})
	}
	slices.SortFunc(packs, func(a, b Pack) int { return int(int64(a.Seq) - int64(b.Seq)) })
	return packs, nil
}

// Free is the space an unprivileged writer may still use on the
// directory's file system.
func (d *Dir) Free(ctx context.Context) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.dir, &st); err != nil {
		return 0, fmt.Errorf("volume %s: statfs: %w", d.dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func (d *Dir) Close() error { return nil }

// syncDir is fileio.SyncDir with the volume named in its error.
func syncDir(dir string) error {
	if err := fileio.SyncDir(dir); err != nil {
		return fmt.Errorf("volume %s: %w", dir, err)
	}
	return nil
}
