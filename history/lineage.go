package history

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// A store's lineage is a UUID made with the store, in the file LINEAGE:
//
//	asof lineage
//	id 1b4e28ba-2fa1-41d2-883f-0016d3cca427
//
// A mirror (docs/SPEC.md section 6) carries its source's lineage and the
// source's transaction ids: a target refuses to follow a source of another
// lineage, since their transaction ids would mean different histories.
// Stores made before the file existed get one at their first open.
//
// A mirror is marked by the file MIRROR. A marked store is read-only
// (changes fail with ErrReadOnly, which wraps EROFS) whoever serves it,
// with or without a running pull, until Promote removes the mark. A mirror
// made before it first reached its source has no LINEAGE yet: the first
// source it reaches gives it one (AdoptLineage).
const (
	lineageFile = "LINEAGE"
	mirrorFile  = "MIRROR"
)

// ErrReadOnly refuses a change to a mirror.
var ErrReadOnly = fmt.Errorf("history: the store is a read-only mirror (asof mirror promote makes it writable): %w", syscall.EROFS)

// newLineage makes a random (version 4) UUID.
func newLineage() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("history: make a lineage id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// storeIdentity is what LINEAGE and MIRROR say.
type storeIdentity struct {
	lineage string // "" only for a mirror that never reached its source
	mirror  bool
}

// loadIdentity reads the store's lineage and mirror mark, making a lineage
// for a store that has none and is no mirror (a new store, or one made
// before the file existed).
func loadIdentity(dir string) (storeIdentity, error) {
	var id storeIdentity
	if _, err := os.Stat(filepath.Join(dir, mirrorFile)); err == nil {
		id.mirror = true
	} else if !errors.Is(err, os.ErrNotExist) {
		return id, fmt.Errorf("history: %w", err)
	}
	lin, err := readLineage(filepath.Join(dir, lineageFile))
	switch {
	case err == nil:
		id.lineage = lin
		return id, nil
	case !errors.Is(err, os.ErrNotExist):
		return id, err
	case id.mirror:
		return id, nil
	}
	if id.lineage, err = newLineage(); err != nil {
		return id, err
	}
	return id, writeLineage(dir, id.lineage)
}

func readLineage(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var id string
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if line == 1 {
			if text != "asof lineage" {
				return "", fmt.Errorf("history: %s: not an asof lineage file (first line %q)", path, text)
			}
			continue
		}
		if v, ok := strings.CutPrefix(text, "id "); ok {
			id = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("history: read %s: %w", path, err)
	}
	if !validLineage(id) {
		return "", fmt.Errorf("history: %s: no valid lineage id (got %q)", path, id)
	}
	return id, nil
}

// validLineage accepts what newLineage makes: 36 characters, hex digits and
// dashes in the UUID places.
func validLineage(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
	}
	return true
}

func writeLineage(dir, id string) error {
	return writeFileSync(filepath.Join(dir, lineageFile), "asof lineage\nid "+id+"\n")
}

// writeFileSync replaces path with body so that a crash leaves the old file
// or the new one, whole: written beside it, fsynced, renamed over it, and
// the directory fsynced.
func writeFileSync(path, body string) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("history: write %s: %w", path, err)
	}
	_, err = f.WriteString(body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("history: write %s: %w", path, err)
	}
	return nil
}

// IsStore reports whether dir holds a store: its FORMAT, or log segments
// of one made before FORMAT existed.
func IsStore(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, formatFile)); err == nil {
		return true
	}
	segs, _ := listSegments(filepath.Join(dir, "log"))
	return len(segs) > 0
}

// CreateMirror makes dir an empty mirror: a store that holds nothing until
// a pull brings its source's transactions, and is read-only. dir must not
// hold a store already; an existing mirror is left as it is.
func CreateMirror(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, mirrorFile)); err == nil {
		return nil
	}
	if IsStore(dir) {
		return fmt.Errorf("history: %s holds a store that is not a mirror: a mirror starts from an empty directory", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("history: create %s: %w", dir, err)
	}
	// The mark first: a store with a LINEAGE and no mark would open as a
	// writable store of its own and make a root directory.
	return writeFileSync(filepath.Join(dir, mirrorFile), "asof mirror\n")
}

// Lineage is the store's lineage id; "" for a mirror that has not reached
// its source yet.
func (s *Store) Lineage() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lineage
}

// Mirror reports whether the store is a read-only mirror.
func (s *Store) Mirror() bool { return s.mirror.Load() }

// AdoptLineage gives a mirror that holds no transaction yet the lineage of
// the source it follows. A mirror of another lineage is refused.
func (s *Store) AdoptLineage(id string) error {
	if !validLineage(id) {
		return fmt.Errorf("history: %q is not a lineage id", id)
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.mirror.Load():
		return fmt.Errorf("history: %s is not a mirror: it follows no source", s.dir)
	case s.lineage == id:
		return nil
	case s.lineage != "" && s.lastTID != 0:
		return fmt.Errorf("history: %s is a mirror of lineage %s; the source is of lineage %s: a mirror follows one store only", s.dir, s.lineage, id)
	}
	if err := writeLineage(s.dir, id); err != nil {
		return err
	}
	s.lineage = id
	return nil
}

// Promote makes a mirror a writable store of its own, with a lineage of its
// own: from now on its history and its source's part, and no target of the
// source may follow it by mistake. The new lineage is written before the
// mark goes, so a crash in between leaves a mirror that follows nothing
// (promote again), never a writable store of its source's lineage.
func (s *Store) Promote() error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if !s.mirror.Load() {
		return fmt.Errorf("history: %s is not a mirror", s.dir)
	}
	if s.LastTID() == 0 {
		return fmt.Errorf("history: %s is a mirror that holds nothing yet: pull from its source first", s.dir)
	}
	id, err := newLineage()
	if err != nil {
		return err
	}
	if err := writeLineage(s.dir, id); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.dir, mirrorFile)); err != nil {
		return fmt.Errorf("history: promote: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.mu.Lock()
	s.lineage = id
	s.mu.Unlock()
	s.mirror.Store(false)
	s.log.Info("history: mirror promoted: the store is writable, with a lineage of its own", "lineage", id)
	return nil
}
