package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/asof/asof/history/internal/fileio"
	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/volume"
	bolt "go.etcd.io/bbolt"
)

// Volumes are where sealed packs live (docs/SPEC.md section 7). Volume 0,
// named "data", is the data directory's volumes/0, where every pack is
// filled; the others are directories or S3 buckets, added while the store
// is open (AddVolume) and recorded in the file VOLUMES. Once a pack is
// sealed the mover (move.go) places it by PlacementRule and moves it
// there; a draining volume takes no new packs and gives all it holds to
// the others.
//
// A volume that cannot be opened, or whose label is not this store's, is
// kept in the set as unreachable (one log line names it): the store opens
// degraded, reads of its blocks fail with EIO, packs go elsewhere, and the
// mover tries to open it again every minute. Refusing to start would make
// every file unreadable for the want of some.

// VolumeSpec says where a volume is.
type VolumeSpec struct {
	Name string  `json:"name"`
	Kind string  `json:"kind"` // "dir" or "s3"
	Path string  `json:"path,omitempty"`
	S3   *S3Spec `json:"s3,omitempty"`
}

// S3Spec is an S3 volume's bucket. It holds no secret: the credentials
// come from the server's environment or CredentialsFile, read when the
// volume is opened.
type S3Spec struct {
	Endpoint        string `json:"endpoint"`
	Bucket          string `json:"bucket"`
	Prefix          string `json:"prefix,omitempty"`
	Region          string `json:"region,omitempty"`
	CredentialsFile string `json:"credentials_file,omitempty"`
	Profile         string `json:"profile,omitempty"`
}

// where is the volume's place, for comparing two specs.
func (v VolumeSpec) where() string {
	if v.Kind == "s3" && v.S3 != nil {
		return fmt.Sprintf("s3://%s/%s at %s", v.S3.Bucket, v.S3.Prefix, v.S3.Endpoint)
	}
	p, _ := filepath.Abs(v.Path)
	return p
}

// VolumeInfo is a volume as `asof volume list` shows it.
type VolumeInfo struct {
	ID      uint16 `json:"id"`
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Where   string `json:"where"`
	State   string `json:"state"` // active, draining, unreachable
	Problem string `json:"problem,omitempty"`
	Bytes   int64  `json:"bytes"` // bytes of the packs the index places there
	Packs   int    `json:"packs"`
	Free    int64  `json:"free"` // bytes it can still take; -1 unbounded (an object store); 0 unknown
}

// PlacementRule is how a sealed pack's volume is chosen.
const PlacementRule = "most free space: a sealed pack goes to the writable (active, reachable) volume with the most free space, an object store (unbounded) first, the data directory last on a tie"

const (
	volumesFile = "VOLUMES"
	dataVolName = "data"
	// VolumeCacheBytes is the S3 read cache's default bound.
	VolumeCacheBytes = 1 << 30
)

// volumesDoc is the VOLUMES file.
type volumesDoc struct {
	// Next is the next volume id: ids are never used twice, so a block's
	// location never names a volume it did not mean.
	Next         uint16      `json:"next"`
	DataDraining bool        `json:"data_draining,omitempty"`
	Volumes      []volumeRec `json:"volumes"`
}

type volumeRec struct {
	ID uint16 `json:"id"`
	VolumeSpec
	Draining bool `json:"draining,omitempty"`
}

// vol is one volume of the open store.
type vol struct {
	id       uint16
	spec     VolumeSpec
	draining bool
	v        volume.Volume // nil while it cannot be opened
	// unchecked: opened, but the store did not answer when its label was
	// to be checked. Its blocks are read (they are checked as read), but
	// it takes no pack until the label checks.
	unchecked bool
	problem   error     // why it is unreachable
	retryAt   time.Time // when the mover tries to open it again
	failAt    time.Time // a Put to it failed: packs wait locally until then
	failErr   error     // and why
}

func (v *vol) writable() bool {
	return v.v != nil && !v.unchecked && !v.draining && time.Now().After(v.failAt)
}

func (v *vol) state() string {
	switch {
	case v.v == nil || v.unchecked:
		return "unreachable"
	case v.draining:
		return "draining"
	}
	return "active"
}

// openVolumes opens volume 0 and those VOLUMES lists. Called by recover,
// after the pack store is open.
func (s *Store) openVolumes() error {
	d0, err := volume.OpenDir(filepath.Join(s.dir, "volumes", "0"))
	if err != nil {
		return err
	}
	s.vols = map[uint16]*vol{0: {id: 0, spec: VolumeSpec{Name: dataVolName, Kind: "dir", Path: d0.String()}, v: d0}}
	// Copies of S3 packs a drain was moving when the process stopped.
	old, _ := filepath.Glob(filepath.Join(s.dir, "volumes", "move-*.tmp"))
	for _, f := range old {
		os.Remove(f)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, volumesFile))
	if errors.Is(err, os.ErrNotExist) {
		s.volNext = 1
		return nil
	}
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	var doc volumesDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("history: %s: %w", filepath.Join(s.dir, volumesFile), err)
	}
	s.volNext = max(doc.Next, 1)
	s.vols[0].draining = doc.DataDraining
	for _, r := range doc.Volumes {
		v := &vol{id: r.ID, spec: r.VolumeSpec, draining: r.Draining}
		s.vols[r.ID] = v
		s.volNext = max(s.volNext, r.ID+1)
		s.reopen(v)
	}
	return nil
}

// reopen tries to open v and check its label; on failure v stays
// unreachable, named in one log line, and is tried again a minute later.
func (s *Store) reopen(v *vol) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	vv := v.v
	var err error
	if vv == nil {
		vv, err = s.openSpec(v.spec)
	}
	if err == nil {
		err = volume.Check(ctx, vv, volume.Label{Store: s.storeID, Volume: v.id})
		if errors.Is(err, volume.ErrUnavailable) {
			// An object store that is down: read what it can serve, and
			// check the label once it answers.
			if v.problem == nil || v.v == nil {
				s.log.Error("history: volume unreachable: its blocks read as EIO and it takes no packs until it is back", "volume", v.spec.Name, "where", v.spec.where(), "err", err)
			}
			if v.v == nil {
				v.v = vv
				s.attach(v)
			}
			v.unchecked, v.problem = true, err
			return
		}
		if err != nil && v.v == nil {
			vv.Close()
		}
	}
	if err != nil {
		if v.problem == nil || v.problem.Error() != err.Error() {
			s.log.Error("history: volume unreachable: its blocks read as EIO and it takes no packs until it is back", "volume", v.spec.Name, "where", v.spec.where(), "err", err)
		}
		v.problem, v.retryAt = err, time.Now().Add(time.Minute)
		return
	}
	if v.problem != nil {
		s.log.Info("history: volume is back", "volume", v.spec.Name)
	}
	attached := v.v != nil
	v.v, v.problem, v.unchecked = vv, nil, false
	if !attached {
		s.attach(v)
	}
}

// attach tells the pack store how to read v's packs.
func (s *Store) attach(v *vol) {
	if d, ok := v.v.(*volume.Dir); ok {
		s.packs.SetVolume(v.id, d.String(), nil)
	} else {
		s.packs.SetVolume(v.id, "", v.v)
	}
}

// openSpec opens the volume spec describes, without reaching it.
func (s *Store) openSpec(spec VolumeSpec) (volume.Volume, error) {
	switch spec.Kind {
	case "dir":
		return volume.OpenDir(spec.Path)
	case "s3":
		if spec.S3 == nil {
			return nil, errors.New("history: S3 volume with no bucket")
		}
		c, err := s.volumeCache()
		if err != nil {
			return nil, err
		}
		return volume.OpenS3(volume.S3Config{Endpoint: spec.S3.Endpoint, Bucket: spec.S3.Bucket, Prefix: spec.S3.Prefix,
			Region: spec.S3.Region, CredentialsFile: spec.S3.CredentialsFile, Profile: spec.S3.Profile, Cache: c, Log: s.log})
	}
	return nil, fmt.Errorf("history: volume kind %q is not dir or s3", spec.Kind)
}

// volumeCache is the S3 volumes' read cache, <data>/cache, opened at the
// first S3 volume.
func (s *Store) volumeCache() (*volume.Cache, error) {
	s.vmu.Lock() // two adds of S3 volumes may race here, and VolumeCache reads it
	defer s.vmu.Unlock()
	if s.vcache != nil {
		return s.vcache, nil
	}
	n := s.opts.VolumeCacheBytes
	if n == 0 {
		n = VolumeCacheBytes
	}
	c, err := volume.OpenCache(filepath.Join(s.dir, "cache"), n, 0)
	if err != nil {
		return nil, err
	}
	s.vcache = c
	return c, nil
}

// saveVolumes writes VOLUMES, durably and atomically; vmu is held.
func (s *Store) saveVolumesLocked() error {
	doc := volumesDoc{Next: s.volNext, DataDraining: s.vols[0].draining}
	for _, id := range s.volIDsLocked() {
		if id == 0 {
			continue
		}
		v := s.vols[id]
		doc.Volumes = append(doc.Volumes, volumeRec{ID: id, VolumeSpec: v.spec, Draining: v.draining})
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteAtomic(filepath.Join(s.dir, volumesFile), append(b, '\n'))
}

func (s *Store) volIDsLocked() []uint16 {
	ids := make([]uint16, 0, len(s.vols))
	for id := range s.vols {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func (s *Store) volByName(name string) *vol {
	for _, v := range s.vols {
		if v.spec.Name == name {
			return v
		}
	}
	return nil
}

// AddVolume adds a volume: it is opened, reached, and claimed (its label
// written, or found to be this one already: an add run again, or a volume
// the config lists at every start, changes nothing). A volume of another
// store, a name already taken by another place, or a volume that cannot
// be reached is refused, and nothing changes.
func (s *Store) AddVolume(ctx context.Context, spec VolumeSpec) error {
	if spec.Kind == "" {
		spec.Kind = "dir"
	}
	if spec.Kind == "dir" {
		abs, err := filepath.Abs(spec.Path)
		if err != nil {
			return err
		}
		spec.Path = abs
	}
	s.vmu.Lock()
	if have := s.volByName(spec.Name); have != nil {
		s.vmu.Unlock()
		if have.spec.Kind == spec.Kind && have.spec.where() == spec.where() {
			return nil
		}
		return fmt.Errorf("volume %s is already %s (%s)", spec.Name, have.spec.where(), have.spec.Kind)
	}
	for _, have := range s.vols {
		if have.spec.Kind == spec.Kind && have.spec.where() == spec.where() {
			s.vmu.Unlock()
			return fmt.Errorf("%s is already volume %s", spec.where(), have.spec.Name)
		}
	}
	id := s.volNext
	s.vmu.Unlock()
	if id == volMissingID {
		return errors.New("volume: no volume ids left")
	}
	vv, err := s.openSpec(spec)
	if err != nil {
		return err
	}
	if p, ok := vv.(interface{ Probe(context.Context) error }); ok {
		if err := p.Probe(ctx); err != nil {
			vv.Close()
			return err
		}
	}
	if err := volume.Claim(ctx, vv, volume.Label{Store: s.storeID, Volume: id}); err != nil {
		vv.Close()
		return err
	}
	s.vmu.Lock()
	defer s.vmu.Unlock()
	if s.volNext != id || s.volByName(spec.Name) != nil {
		vv.Close()
		return fmt.Errorf("volume %s: another add ran meanwhile; run it again", spec.Name)
	}
	v := &vol{id: id, spec: spec, v: vv}
	s.vols[id] = v
	s.volNext = id + 1
	if err := s.saveVolumesLocked(); err != nil {
		delete(s.vols, id)
		s.volNext = id
		vv.Close()
		return err
	}
	s.attach(v)
	s.log.Info("history: volume added", "volume", spec.Name, "kind", spec.Kind, "where", vv.String(), "id", id)
	s.kickMover()
	return nil
}

// volMissingID is the index's placeholder volume (a block no pack holds).
const volMissingID = 0xffff

// Volumes lists the volumes, with the bytes and packs the index places on
// each.
func (s *Store) Volumes(ctx context.Context) ([]VolumeInfo, error) {
	bytes, packs, err := s.volumeUsage()
	if err != nil {
		return nil, err
	}
	s.vmu.Lock()
	vols := make([]*vol, 0, len(s.vols))
	for _, id := range s.volIDsLocked() {
		vols = append(vols, s.vols[id])
	}
	s.vmu.Unlock()
	var out []VolumeInfo
	for _, v := range vols {
		s.vmu.Lock()
		info := VolumeInfo{ID: v.id, Name: v.spec.Name, Kind: v.spec.Kind, Where: v.spec.where(), State: v.state(),
			Bytes: bytes[v.id], Packs: len(packs[v.id])}
		if v.problem != nil {
			info.Problem = v.problem.Error()
		}
		vv := v.v
		s.vmu.Unlock()
		if vv != nil {
			info.Where = vv.String()
			if f, err := vv.Free(ctx); err == nil {
				info.Free = f
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// VolumeCacheInfo is the S3 volumes' read cache: its bound, what it
// holds, and what it did since the store opened.
type VolumeCacheInfo struct {
	Dir       string `json:"dir"`
	Max       int64  `json:"max"`  // bytes
	Used      int64  `json:"used"` // bytes, pieces and their headers
	Hits      int64  `json:"hits"`
	Misses    int64  `json:"misses"`
	Evictions int64  `json:"evictions"`
	Damaged   int64  `json:"damaged"` // pieces that failed their check, and were fetched again
}

// VolumeCache describes the S3 volumes' read cache; nil when no S3
// volume opened it.
func (s *Store) VolumeCache() *VolumeCacheInfo {
	s.vmu.Lock()
	c := s.vcache
	s.vmu.Unlock()
	if c == nil {
		return nil
	}
	st := c.Stats()
	return &VolumeCacheInfo{Dir: filepath.Join(s.dir, "cache"), Max: c.Max(), Used: c.Used(),
		Hits: st.Hits.Load(), Misses: st.Misses.Load(), Evictions: st.Evictions.Load(), Damaged: st.Damaged.Load()}
}

// volumeUsage sums, per volume, the bytes of the blocks the index places
// there and the packs they are in.
func (s *Store) volumeUsage() (map[uint16]int64, map[uint16]map[uint32]bool, error) {
	bytes := map[uint16]int64{}
	packs := map[uint16]map[uint32]bool{}
	err := s.index.View(func(tx *bolt.Tx) error {
		return tx.Bucket(index.BucketBlk).ForEach(func(k, v []byte) error {
			e, err := index.DecodeBlk(v)
			if err != nil {
				return err
			}
			bytes[e.Loc.Vol] += int64(e.Loc.Length) + 48
			if packs[e.Loc.Vol] == nil {
				packs[e.Loc.Vol] = map[uint32]bool{}
			}
			packs[e.Loc.Vol][e.Loc.Pack] = true
			return nil
		})
	})
	return bytes, packs, err
}

// RemoveVolume forgets an empty volume: drained, no block of the index on
// it and no pack left in it. Its label stays, so it cannot be mistaken
// for a new volume; volume 0 (the data directory) is never removed.
func (s *Store) RemoveVolume(ctx context.Context, name string) error {
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	s.vmu.Lock()
	v := s.volByName(name)
	s.vmu.Unlock()
	if v == nil {
		return fmt.Errorf("no volume %s", name)
	}
	if v.id == 0 {
		return errors.New("volume data is the data directory, where packs are filled: it cannot be removed")
	}
	_, packs, err := s.volumeUsage()
	if err != nil {
		return err
	}
	if n := len(packs[v.id]); n > 0 {
		return fmt.Errorf("volume %s still holds %d packs: asof volume drain %s first", name, n, name)
	}
	if v.v != nil {
		if err := s.sweepVolume(ctx, v, nil); err != nil {
			return err
		}
		left, err := v.v.List(ctx)
		if err != nil {
			return err
		}
		if len(left) > 0 {
			return fmt.Errorf("volume %s still holds %d pack files", name, len(left))
		}
	}
	s.vmu.Lock()
	defer s.vmu.Unlock()
	delete(s.vols, v.id)
	if err := s.saveVolumesLocked(); err != nil {
		s.vols[v.id] = v
		return err
	}
	s.packs.DropVolume(v.id)
	if v.v != nil {
		v.v.Close()
	}
	s.log.Info("history: volume removed", "volume", name)
	return nil
}

// setDraining marks a volume draining (it takes no new packs), durably.
func (s *Store) setDraining(v *vol, on bool) error {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	if v.draining == on {
		return nil
	}
	v.draining = on
	if err := s.saveVolumesLocked(); err != nil {
		v.draining = !on
		return err
	}
	return nil
}

// DrainVolume moves every pack the volume holds to the other writable
// volumes, pack by pack, telling progress in bytes. The volume is marked
// draining first, durably: it takes no new packs, and a drain interrupted
// (the caller gone, the process killed) goes on where it stopped, in the
// background after a restart, or when it is run again.
func (s *Store) DrainVolume(ctx context.Context, name string, progress Progress) error {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	s.vmu.Lock()
	v := s.volByName(name)
	s.vmu.Unlock()
	if v == nil {
		return fmt.Errorf("no volume %s", name)
	}
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	if err := s.setDraining(v, true); err != nil {
		return err
	}
	if err := s.finishMove(ctx); err != nil {
		return err
	}
	if v.v == nil {
		return fmt.Errorf("volume %s is unreachable: %w", name, v.problem)
	}
	if err := s.drainPacks(ctx, v, progress); err != nil {
		return err
	}
	if err := s.sweepVolume(ctx, v, nil); err != nil {
		return err
	}
	s.log.Info("history: volume drained", "volume", name)
	return nil
}

// packsOn is the packs the index places on volume id that may be moved
// (sealed, and not written by a commit in flight), with their sizes.
func (s *Store) packsOn(id uint16) ([]uint32, map[uint32]int64, error) {
	cur := min(s.packs.SealedBelow(), s.packFloor.Load())
	_, packs, err := s.volumeUsage()
	if err != nil {
		return nil, nil, err
	}
	sizes := map[uint32]int64{}
	s.vmu.Lock()
	v := s.vols[id]
	s.vmu.Unlock()
	var listed map[uint32]int64
	if v != nil && v.v != nil {
		if l, err := v.v.List(context.Background()); err == nil {
			listed = map[uint32]int64{}
			for _, p := range l {
				listed[p.Seq] = p.Size
			}
		}
	}
	var seqs []uint32
	for seq := range packs[id] {
		if id == 0 && seq >= cur {
			continue
		}
		seqs = append(seqs, seq)
		sizes[seq] = listed[seq]
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, sizes, nil
}

// placeFor picks the volume a pack now on volume from goes to, by
// PlacementRule, among the writable volumes (from only if it is volume 0:
// a sealed pack may stay in the data directory); volume 0 is the last
// candidate, so that it loses a tie. Nil when there is none.
func (s *Store) placeFor(from uint16) *vol {
	s.vmu.Lock()
	var cands []*vol
	for _, id := range s.volIDsLocked() {
		if v := s.vols[id]; id != 0 && id != from && v.writable() {
			cands = append(cands, v)
		}
	}
	if v := s.vols[0]; v.writable() {
		cands = append(cands, v)
	}
	s.vmu.Unlock()
	if len(cands) == 0 {
		return nil
	}
	free := make([]int64, len(cands))
	for i, v := range cands {
		f, err := v.v.Free(context.Background())
		if err != nil {
			f = 0
		}
		free[i] = f
	}
	return cands[volume.Place(free)]
}

// noPlaceFor says why placeFor(from.id) found no volume: each other
// volume and what keeps it from taking packs, in particular a copy to it
// that failed moments ago, which keeps it out for half a minute though it
// may look healthy again (or have been added again) by now.
func (s *Store) noPlaceFor(from *vol) error {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	now := time.Now()
	var why []string
	for _, id := range s.volIDsLocked() {
		v := s.vols[id]
		switch {
		case id == from.id:
			continue
		case v.v == nil || v.unchecked:
			why = append(why, fmt.Sprintf("%s is unreachable (%v)", v.spec.Name, v.problem))
		case v.draining:
			why = append(why, fmt.Sprintf("%s is draining", v.spec.Name))
		case now.Before(v.failAt):
			why = append(why, fmt.Sprintf("%s: a copy to it failed %s ago (%v), so it takes no pack for %s more",
				v.spec.Name, (putFailedPause-v.failAt.Sub(now)).Round(time.Second), v.failErr, v.failAt.Sub(now).Round(time.Second)))
		}
	}
	if len(why) == 0 {
		return fmt.Errorf("volume %s: there is no other volume to drain it to (asof volume add one)", from.spec.Name)
	}
	return fmt.Errorf("volume %s: no other volume can take its packs now: %s", from.spec.Name, strings.Join(why, "; "))
}

// ParseS3URL splits s3://BUCKET/PREFIX, checking the bucket's name and
// the prefix, so that a typo is told apart from a missing bucket.
func ParseS3URL(s string) (bucket, prefix string, err error) { return volume.ParseURL(s) }
