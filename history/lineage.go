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

	"github.com/asof/asof/history/internal/fileio"
	"github.com/asof/asof/history/internal/txlog"
)

// A store's identity is two UUIDs in the file LINEAGE:
//
//	asof lineage
//	id 1b4e28ba-2fa1-41d2-883f-0016d3cca427
//	store 6fa459ea-ee8a-4ca4-894e-db77e160355e
//
// The lineage (id) names a history. A mirror (docs/SPEC.md section 6)
// carries its source's lineage and the source's transaction ids: a target
// refuses to follow a source of another lineage, since their transaction
// ids would mean different histories.
//
// The store id names this copy: every mirror has its own, and keeps it
// when promoted. Volume labels name it (volumes.go), not the lineage:
// otherwise a mirror, which shares its source's lineage, could take one of
// its source's volumes for its own, and a promote, which gives the mirror
// a lineage of its own, would disown its volumes.
//
// Stores made before the file existed get one at their first open; a
// store whose file has no store line takes its lineage as its store id,
// which is what its volume labels already name (a mirror takes a new one:
// it shares its lineage).
//
// A mirror is marked by the file MIRROR. A marked store is read-only
// (changes fail with ErrReadOnly, which wraps EROFS) whoever serves it,
// with or without a running pull, until Promote removes the mark. A mirror
// made before it first reached its source has a store id and no lineage
// yet: the first source it reaches gives it one (AdoptLineage).
const (
	lineageFile = "LINEAGE"
	mirrorFile  = "MIRROR"
)

// ErrReadOnly refuses a change to a mirror.
var ErrReadOnly = fmt.Errorf("history: the store is a read-only mirror (asof mirror promote makes it writable): %w", syscall.EROFS)

// newUUID makes a random (version 4) UUID.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("history: make a store id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// storeIdentity is what LINEAGE and MIRROR say.
type storeIdentity struct {
	lineage string // "" only for a mirror that never reached its source
	store   string // this copy's id, which volume labels name
	mirror  bool
}

// loadIdentity reads the store's identity and mirror mark, making what is
// missing: a lineage for a store that has none and is no mirror (a new
// store, or one made before the file existed), and a store id.
func loadIdentity(dir string) (storeIdentity, error) {
	var id storeIdentity
	if _, err := os.Stat(filepath.Join(dir, mirrorFile)); err == nil {
		id.mirror = true
	} else if !errors.Is(err, os.ErrNotExist) {
		return id, fmt.Errorf("history: %w", err)
	}
	var err error
	id.lineage, id.store, err = readIdentity(filepath.Join(dir, lineageFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	old := id
	if id.store == "" && id.lineage != "" && !id.mirror {
		id.store = id.lineage // a store older than the store line: what its volume labels name
	}
	if id.lineage == "" && !id.mirror {
		if id.lineage, err = newUUID(); err != nil {
			return id, err
		}
	}
	if id.store == "" {
		if id.store, err = newUUID(); err != nil {
			return id, err
		}
	}
	if id != old {
		return id, writeIdentity(dir, id.lineage, id.store)
	}
	return id, nil
}

// readIdentity reads LINEAGE: either id may be missing ("").
func readIdentity(path string) (lineage, store string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if line == 1 {
			if text != "asof lineage" {
				return "", "", fmt.Errorf("history: %s: not an asof lineage file (first line %q)", path, text)
			}
			continue
		}
		k, v, _ := strings.Cut(text, " ")
		switch v = strings.TrimSpace(v); k {
		case "id":
			lineage = v
		case "store":
			store = v
		default:
			continue // a later build's field
		}
		if !validUUID(v) {
			return "", "", fmt.Errorf("history: %s: %s %q is no valid UUID", path, k, v)
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("history: read %s: %w", path, err)
	}
	return lineage, store, nil
}

// validUUID accepts what newUUID makes: 36 characters, hex digits and
// dashes in the UUID places.
func validUUID(s string) bool {
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

// writeIdentity writes LINEAGE; a mirror that has not reached its source
// has no lineage line.
func writeIdentity(dir, lineage, store string) error {
	body := "asof lineage\n"
	if lineage != "" {
		body += "id " + lineage + "\n"
	}
	body += "store " + store + "\n"
	return fileio.WriteAtomic(filepath.Join(dir, lineageFile), []byte(body))
}

// IsStore reports whether dir holds a store: its FORMAT, or log segments
// of one made before FORMAT existed.
func IsStore(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, formatFile)); err == nil {
		return true
	}
	segs, _ := txlog.ListSegments(filepath.Join(dir, "log"))
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
	return fileio.WriteAtomic(filepath.Join(dir, mirrorFile), []byte("asof mirror\n"))
}

// Lineage is the store's lineage id; "" for a mirror that has not reached
// its source yet.
func (s *Store) Lineage() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lineage
}

// StoreID is this copy's id, which its volume labels name: unlike the
// lineage, no mirror shares it, and a promote keeps it.
func (s *Store) StoreID() string { return s.storeID }

// Mirror reports whether the store is a read-only mirror.
func (s *Store) Mirror() bool { return s.mirror.Load() }

// AdoptLineage gives a mirror that holds no transaction yet the lineage of
// the source it follows. A mirror of another lineage is refused.
func (s *Store) AdoptLineage(id string) error {
	if !validUUID(id) {
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
	if err := writeIdentity(s.dir, id, s.storeID); err != nil {
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
	id, err := newUUID()
	if err != nil {
		return err
	}
	if err := writeIdentity(s.dir, id, s.storeID); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.dir, mirrorFile)); err != nil {
		return fmt.Errorf("history: promote: %w", err)
	}
	if err := fileio.SyncDir(s.dir); err != nil {
		return err
	}
	s.mu.Lock()
	s.lineage = id
	s.mu.Unlock()
	s.mirror.Store(false)
	s.log.Info("history: mirror promoted: the store is writable, with a lineage of its own", "lineage", id)
	return nil
}
