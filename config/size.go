package config

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultVolumeCache is the default volume_cache: the bound of the local
// cache of object-store volumes' packs.
const DefaultVolumeCache = 1 << 30

// minVolumeCache is the smallest volume_cache: one piece of the cache
// (history/internal/volume.DefaultChunk). Less would cache nothing.
const minVolumeCache = 1 << 20

// sizeUnits are the units a size may carry: binary multiples only, so
// that "1GiB" cannot be read as 10^9 by one reader and 2^30 by another.
var sizeUnits = []struct {
	name  string
	shift uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// ParseSize reads a byte count: an integer with a binary unit (B, KiB,
// MiB, GiB, TiB, in any case, a space before it allowed) or without one
// (bytes).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	shift := uint(0)
	for _, u := range sizeUnits {
		if len(t) > len(u.name) && strings.EqualFold(t[len(t)-len(u.name):], u.name) {
			t, shift = strings.TrimSpace(t[:len(t)-len(u.name)]), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	if n > (1<<63-1)>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}

// FormatSize writes n with the largest unit that divides it.
func FormatSize(n int64) string {
	for _, u := range sizeUnits {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// volumeCache reads volume_cache, a size of at least one cache piece.
func (l *loader) volumeCache(key string) int64 {
	s, ok := l.str(key)
	if !ok {
		return 0
	}
	n, err := ParseSize(s)
	if err != nil {
		l.fail(key, "%q is not a size (use an integer and a binary unit: e.g. 512MiB, 1GiB, 20GiB)", s)
		return 0
	}
	if n < minVolumeCache {
		l.fail(key, "%q is below 1MiB, the cache's piece: it could hold nothing (use e.g. 512MiB, 1GiB)", s)
		return 0
	}
	return n
}
