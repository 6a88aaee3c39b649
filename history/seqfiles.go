package history

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// listSeq lists the sequence numbers of the files in dir named as
// hexadecimal numbers of at most bits bits with the given suffix (log
// segments, packs, intent files), in order. Other names are ignored.
func listSeq(dir, suffix string, bits int, what string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("history: list %s: %w", what, err)
	}
	var seqs []uint64
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(n, 16, bits); err == nil {
			seqs = append(seqs, v)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

// listSeq32 is listSeq for 32-bit sequence numbers.
func listSeq32(dir, suffix, what string) ([]uint32, error) {
	seqs, err := listSeq(dir, suffix, 32, what)
	out := make([]uint32, len(seqs))
	for i, v := range seqs {
		out[i] = uint32(v)
	}
	return out, err
}
