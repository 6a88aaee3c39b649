package server

import (
	"errors"
	"time"

	"github.com/asof/asof/history"
)

// The cleaner thins history by the configured retention policy (docs/SPEC.md
// section 5): one pass at start-up, then one every cleanEvery. A pass only
// scans the store when time has moved a grain boundary past some history,
// and applies its work a few thousand records at a time, so the live
// server never waits for it more than a few milliseconds.

// policy converts the configured rules.
func (s *Server) policy() history.Policy {
	var p history.Policy
	for _, r := range s.cfg.Retention {
		p = append(p, history.Rule{Keep: r.Keep, For: r.For, Forever: r.Forever})
	}
	return p
}

// cleanEvery is how often the cleaner runs: the finest grain, kept within
// [10s, 10m] — finer would be busy work, coarser would let history pile up.
func cleanEvery(p history.Policy) time.Duration {
	d := p[0].Keep
	return min(max(d, 10*time.Second), 10*time.Minute)
}

func (s *Server) startCleaner() {
	p := s.policy()
	if len(p) == 0 {
		return
	}
	// Not in s.wg: Shutdown does not wait for a pass; closing the store
	// stops it at its next batch.
	s.stopClean = make(chan struct{})
	go func() {
		t := time.NewTicker(cleanEvery(p))
		defer t.Stop()
		for {
			if _, err := s.prune(false, true, nil); err != nil {
				if errors.Is(err, history.ErrClosed) {
					return
				}
				// A mirror's pass goes on once its source's next
				// transaction arrives (history.ErrMirrorNoRoom).
				if !errors.Is(err, history.ErrMirrorNoRoom) {
					s.log.Error("cleaner: pass failed; history is kept until a pass succeeds", "err", err)
				}
			}
			select {
			case <-s.stopClean:
				return
			case <-t.C:
			}
		}
	}()
}

// prune runs one cleaner pass under the configured policy (none: nothing
// is pruned) and logs what it did. The continuous cleaner is gentle: it
// rests between batches as long as each took.
func (s *Server) prune(dryRun, gentle bool, progress history.Progress) (*history.PruneReport, error) {
	start := time.Now()
	rep, err := s.store.Prune(s.policy(), history.PruneOptions{DryRun: dryRun, Progress: progress, Gentle: gentle})
	if err != nil {
		return nil, err
	}
	if !dryRun && (rep.Records > 0 || rep.Moments > 0) {
		s.pmu.Lock()
		s.lastPrune = &LastPrune{At: time.Now().UTC(), Records: rep.Records, StoredBefore: rep.StoredBefore, StoredAfter: rep.StoredAfter}
		s.pmu.Unlock()
	}
	if rep.Records > 0 || rep.Moments > 0 || dryRun {
		s.log.Info("cleaner pass", "dry_run", dryRun, "moments", rep.Moments, "records", rep.Records,
			"versions", rep.Versions, "blocks", rep.Blocks, "block_bytes", rep.BlockBytes,
			"stored_before", rep.StoredBefore, "stored_after", rep.StoredAfter,
			"oldest", rep.Oldest.Time(), "took", time.Since(start).Round(time.Millisecond))
	}
	return rep, nil
}
