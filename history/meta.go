package history

import "github.com/asof/asof/history/internal/record"

// Meta lists the live bookkeeping records whose names start with prefix.
func (s *Store) Meta(prefix string) (map[string][]byte, error) {
	ls, _, done, err := s.readLayers(Live)
	if err != nil {
		return nil, err
	}
	defer done()
	out := map[string][]byte{}
	err = s.scanKV(ls, RootID, record.PrefixMeta+prefix, "", Live, func(key string, p []byte) bool {
		out[key[len(record.PrefixMeta):]] = append([]byte(nil), p...)
		return true
	})
	return out, err
}
