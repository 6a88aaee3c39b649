package history

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/asof/asof/history/internal/fileio"
)

// The FORMAT file says how a store's records are to be read. It is written
// once, when the store is created, before its first log frame, and never
// changes: the data keys of a file name chunk numbers, so every record of
// a store was written with the chunk size it names.
//
//	asof store
//	version 2
//	chunk 16384
//
// Stores made before the file existed (version 1) have none; their chunk
// size was 64 KiB, and Open writes the file for them.
const (
	formatFile    = "FORMAT"
	formatVersion = 2
	legacyChunk   = 64 << 10
)

type storeFormat struct {
	version int
	chunk   int
}

// checkChunkSize wants a power of two from 4 KiB (the inline limit: a
// smaller chunk would never be a block) to 1 MiB (a block is read whole).
func checkChunkSize(n int) error {
	if n < InlineMax || n > 1<<20 || n&(n-1) != 0 {
		return fmt.Errorf("chunk size %d: want a power of two from %d to %d", n, InlineMax, 1<<20)
	}
	return nil
}

// loadFormat reads dir's FORMAT, or writes it: for a new store with the
// chunk size asked for, for a store that predates the file with the 64 KiB
// it was written with.
func loadFormat(dir string, chunk int) (storeFormat, error) {
	path := filepath.Join(dir, formatFile)
	f, err := readFormat(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	segs, err := fileio.ListSeq32(filepath.Join(dir, "log"), ".seg", "log segments")
	if err != nil {
		return storeFormat{}, err
	}
	f = storeFormat{version: formatVersion, chunk: chunk}
	if len(segs) > 0 {
		f = storeFormat{version: 1, chunk: legacyChunk}
	}
	if err := checkChunkSize(f.chunk); err != nil {
		return storeFormat{}, fmt.Errorf("history: %w", err)
	}
	return f, writeFormat(path, f)
}

func readFormat(path string) (storeFormat, error) {
	file, err := os.Open(path)
	if err != nil {
		return storeFormat{}, err
	}
	defer file.Close()
	var f storeFormat
	sc := bufio.NewScanner(file)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if line == 1 {
			if text != "asof store" {
				return storeFormat{}, fmt.Errorf("history: %s: not an asof store format file (first line %q)", path, text)
			}
			continue
		}
		if text == "" {
			continue
		}
		name, value, _ := strings.Cut(text, " ")
		var field *int
		switch name {
		case "version":
			field = &f.version
		case "chunk":
			field = &f.chunk
		default:
			return storeFormat{}, fmt.Errorf("history: %s line %d: unknown setting %q", path, line, name)
		}
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return storeFormat{}, fmt.Errorf("history: %s line %d: %s %q is not a number", path, line, name, value)
		}
		*field = n
	}
	if err := sc.Err(); err != nil {
		return storeFormat{}, fmt.Errorf("history: read %s: %w", path, err)
	}
	switch {
	case f.version < 1:
		return storeFormat{}, fmt.Errorf("history: %s: no format version", path)
	case f.version > formatVersion:
		return storeFormat{}, fmt.Errorf("history: %s: store format %d is newer than this asof reads (%d): upgrade asof", path, f.version, formatVersion)
	}
	if err := checkChunkSize(f.chunk); err != nil {
		return storeFormat{}, fmt.Errorf("history: %s: %w", path, err)
	}
	return f, nil
}

// writeFormat makes the file durable before anything that depends on it
// is written: a crash leaves either no file (a store with no log yet, or
// a legacy one) or the whole file.
func writeFormat(path string, f storeFormat) error {
	return fileio.WriteAtomic(path, fmt.Appendf(nil, "asof store\nversion %d\nchunk %d\n", f.version, f.chunk))
}
