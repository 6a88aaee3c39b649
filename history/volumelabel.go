package history

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/asof/asof/history/internal/fileio"
)

// volumeLineage is the store's lineage id, which every volume's label
// names: the id in the data directory's LINEAGE file
//
//	asof lineage
//	id 1b4e28ba-2fa1-41d2-883f-0016d3cca427
//
// made (a random UUID) when the store has none. It is the file mirrors
// read and write, in the same format, so a store's volumes and its mirrors
// name the same lineage.
func volumeLineage(dir string) (string, error) {
	path := filepath.Join(dir, "LINEAGE")
	b, err := os.ReadFile(path)
	if err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		first := true
		for sc.Scan() {
			text := strings.TrimSpace(sc.Text())
			if first {
				if text != "asof lineage" {
					return "", fmt.Errorf("history: %s: not an asof lineage file", path)
				}
				first = false
				continue
			}
			if id, ok := strings.CutPrefix(text, "id "); ok && len(strings.TrimSpace(id)) == 36 {
				return strings.TrimSpace(id), nil
			}
		}
		return "", fmt.Errorf("history: %s: no lineage id", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("history: %w", err)
	}
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", fmt.Errorf("history: make a lineage id: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	id := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	if err := writeSynced(path, []byte("asof lineage\nid "+id+"\n")); err != nil {
		return "", err
	}
	return id, nil
}

// writeSynced replaces path with b so that a crash leaves the old file or
// the new one, whole: written beside it, fsynced, renamed over it, the
// directory fsynced.
func writeSynced(path string, b []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("history: write %s: %w", path, err)
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("history: write %s: %w", path, err)
	}
	return fileio.SyncDir(filepath.Dir(path))
}
