package history

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/txlog"
)

// The prune crash test runs the cleaner in a child process (this test
// binary, re-executed) and kills it with SIGKILL in the middle of a pass:
// while it logs the collapse frame, while it logs drop and version frames,
// while it removes and rewrites packs, while it rewrites log segments, and
// after it finished. The parent first builds a store whose history spans
// simulated days (an injected clock), remembering the model at every
// committed transaction. Each round copies that store, and a child opens
// the copy with the clock stopped at a chosen "now" and prunes it under a
// policy, most rounds with a writer changing files at the same time (its
// operations are a deterministic stream the parent replays, acknowledged
// as in crash_test.go). After each kill the parent reopens the store and
// checks:
//
//   - it opens, and no half-rewritten log segment is left;
//   - the live state is a prefix of the writer's operations, no shorter
//     than the last one acknowledged, and every moment the writer
//     committed reads as it did;
//   - every moment the policy keeps reads exactly as the model then;
//     every other moment reads either as its own model state (the pass had
//     not logged its collapse frame: then none is collapsed) or as the model
//     at the kept moment the policy collapses it into, which Store.Moment
//     names;
//   - Verify finds no damage.
//
// Some rounds restart the child on the killed store (the pass resumes,
// with more writes) and kill it again. Finally the parent runs a whole
// pass itself, checks every moment again, and checks that what is left is
// what the kept moments need: every record is seen by a kept moment, and
// the packs hold at most twice the bytes of the blocks still referenced
// plus one pack.

const (
	pcSegMax  = 16 << 10 // many log segments to rewrite
	pcPackMax = 1 << 20  // many packs to rewrite or remove
)

// pcPolicies are the policies the rounds alternate between: one keeping a
// day forever, one letting history older than two days go.
var pcPolicies = []Policy{
	{{Keep: time.Minute, For: time.Hour}, {Keep: time.Hour, For: 24 * time.Hour}, {Keep: 24 * time.Hour, Forever: true}},
	{{Keep: 10 * time.Second, For: 10 * time.Minute}, {Keep: time.Hour, For: 48 * time.Hour}},
}

// pcStages are the points a round's kill is aimed at: the child arms its
// kill when the pass reaches the stage (for "packs" and "log", a random one
// of the packs or segments it rewrites), and it lands a random delay later,
// up to the stage's duration (or one item's) in the first rounds, which
// are not killed. "start" is the collapse frame; "records" the drop
// frames; "versions" the version frames and the removal of dead packs;
// "packs" pack rewriting; "log" log segment rewriting; "done" the pass
// completed, writes going on.
var pcStages = []string{"start", "records", "versions", "packs", "log", "done"}

func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				return true
			}
		}
	}
	return false
}

// pcOut writes the child's report lines, one at a time, flushed.
type pcOut struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *pcOut) line(a ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintln(o.w, a...)
	o.w.Flush()
}

// TestPruneCrashChild is the child: it opens the store with the clock
// stopped at ASOF_PCRASH_NOW, starts the writer (unless the seed is 0) and
// runs one pass. It arms its own SIGKILL when the pass reaches the stage
// ASOF_PCRASH_KILL (for "packs" and "log", the item ASOF_PCRASH_FRAC of
// the way through the stage's packs or segments), ASOF_PCRASH_DELAY
// microseconds later: the kill lands where it is aimed, which a signal
// from the parent through the pipe could not. The parent kills it too,
// after DONE and if it hangs.
func TestPruneCrashChild(t *testing.T) {
	dir := os.Getenv("ASOF_PCRASH_DIR")
	if dir == "" {
		t.Skip("runs only as the child of TestPruneCrashKill9")
	}
	txlog.SegmentSize, pack.MaxSize = pcSegMax, pcPackMax
	nowNs, _ := strconv.ParseInt(os.Getenv("ASOF_PCRASH_NOW"), 10, 64)
	now := time.Unix(0, nowNs).UTC()
	pi, _ := strconv.Atoi(os.Getenv("ASOF_PCRASH_POLICY"))
	seed, _ := strconv.ParseUint(os.Getenv("ASOF_PCRASH_SEED"), 10, 64)
	killStage := os.Getenv("ASOF_PCRASH_KILL")
	delayUs, _ := strconv.ParseInt(os.Getenv("ASOF_PCRASH_DELAY"), 10, 64)
	frac, _ := strconv.ParseFloat(os.Getenv("ASOF_PCRASH_FRAC"), 64)
	out := &pcOut{w: bufio.NewWriter(os.Stdout)}
	s, err := Open(dir, Options{FlushInterval: 20 * time.Millisecond, Clock: func() time.Time { return now }})
	if err != nil {
		out.line("ERROR open:", err)
		os.Exit(1)
	}
	arm := func() {
		time.AfterFunc(time.Duration(delayUs)*time.Microsecond, func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) })
	}
	if seed != 0 {
		go func() {
			w := newWorkload(seed)
			for i := 0; ; i++ {
				if err := applyStore(s, w.next()); err != nil {
					out.line("ERROR write:", err)
					os.Exit(1)
				}
				switch {
				case i%25 == 24:
					tid, err := s.Commit()
					if err != nil {
						out.line("ERROR commit:", err)
						os.Exit(1)
					}
					out.line("COMMIT", i, uint64(tid))
				case i%4 == 3:
					if err := s.Durable(); err != nil {
						out.line("ERROR durable:", err)
						os.Exit(1)
					}
					out.line("ACK", i)
				}
				time.Sleep(time.Millisecond)
			}
		}()
		time.Sleep(20 * time.Millisecond) // the writer is under way
	}
	start := time.Now()
	out.line("START")
	if killStage == "start" {
		arm()
	}
	armed := false
	rep, err := s.Prune(pcPolicies[pi], PruneOptions{Progress: func(stage string, done, total int64) {
		out.line("P", stage, done, total, time.Since(start).Microseconds())
		if armed || stage != killStage {
			return
		}
		// Packs and segments are rewritten one by one, each after its
		// progress call: aim at one of them.
		if item := int64(frac * float64(total)); (stage == "packs" || stage == "log") && done < item && item < total {
			return
		}
		armed = true
		arm()
	}})
	if err != nil {
		out.line("ERROR prune:", err)
		os.Exit(1)
	}
	out.line("DONE", time.Since(start).Microseconds(), rep.Moments, rep.Records, rep.Versions, rep.Blocks, rep.Packs, rep.Segments)
	if killStage == "done" {
		arm()
	}
	select {} // writing on until killed
}

// pcBase is the prepared store: its transactions and the model at each.
type pcBase struct {
	dir    string
	txns   []TID
	states map[TID]model
	last   model
	end    time.Time // the clock after the last transaction
}

// buildPruneCrashBase makes a store of ops single-operation transactions,
// mostly seconds apart and now and then hours, spanning days. The models
// share the bytes of files an operation did not change.
func buildPruneCrashBase(t *testing.T, dir string, ops int, seed uint64) *pcBase {
	clk := &fakeClock{t: time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC)}
	s := openTest(t, dir, clk)
	defer s.Close()
	b := &pcBase{dir: dir, states: map[TID]model{}}
	first := s.LastTID() // the root directory's creation
	b.txns = append(b.txns, first)
	b.states[first] = model{}
	w := newWorkload(seed)
	rnd := rand.New(rand.NewPCG(seed, 11))
	cur, snap := model{}, model{}
	for i := 0; i < ops; i++ {
		op := w.next()
		if err := applyStore(s, op); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		cur.apply(op)
		next := model{}
		for k, v := range snap {
			next[k] = v
		}
		if v, ok := cur[op.name]; ok {
			next[op.name] = append([]byte(nil), v...)
		} else {
			delete(next, op.name)
		}
		snap = next
		step := time.Duration(1+rnd.IntN(20)) * time.Second
		if rnd.IntN(40) == 0 {
			step = time.Duration(rnd.IntN(12*3600)) * time.Second
		}
		clk.add(step)
		tid := commit(t, s)
		if tid != b.txns[len(b.txns)-1] {
			b.txns = append(b.txns, tid)
		}
		b.states[tid] = snap
	}
	b.last, b.end = snap, clk.t
	return b
}

// pcExpect is what a policy at a moment does to the base's transactions.
type pcExpect struct {
	kept   map[TID]bool
	target map[TID]TID // the kept moment each one reads as (itself if kept)
	first  TID         // the oldest kept
}

func pruneCrashExpect(b *pcBase, p Policy, now time.Time) pcExpect {
	e := pcExpect{kept: keptOracle(b.txns, p, now), target: map[TID]TID{}}
	next := TID(0)
	for i := len(b.txns) - 1; i >= 0; i-- {
		tid := b.txns[i]
		if e.kept[tid] {
			next = tid
			e.first = tid
		}
		e.target[tid] = next
	}
	return e
}

// pcChild is what one child run reported.
type pcChild struct {
	lastAck  int
	commits  map[int]TID
	stage    string // the last stage the child reported before it died
	progress string // its last progress line
	done     bool
	times    map[string]int64 // microseconds from START to each stage's first report
	items    map[string]int64 // the total of each stage's first report
	total    int64            // the pass's duration, when it finished
}

// lockedBuffer collects the child's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func runPruneCrashChild(t *testing.T, dir string, now time.Time, policy int, seed uint64, stage string, frac float64, delay time.Duration, rnd *rand.Rand) pcChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPruneCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ASOF_PCRASH_DIR="+dir,
		"ASOF_PCRASH_NOW="+strconv.FormatInt(now.UnixNano(), 10),
		"ASOF_PCRASH_POLICY="+strconv.Itoa(policy),
		"ASOF_PCRASH_SEED="+strconv.FormatUint(seed, 10),
		"ASOF_PCRASH_KILL="+stage,
		"ASOF_PCRASH_FRAC="+strconv.FormatFloat(frac, 'f', -1, 64),
		"ASOF_PCRASH_DELAY="+strconv.FormatInt(delay.Microseconds(), 10))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := func() { cmd.Process.Signal(syscall.SIGKILL) }
	hung := time.AfterFunc(60*time.Second, kill)
	defer hung.Stop()
	c := pcChild{lastAck: -1, commits: map[int]TID{}, times: map[string]int64{}, items: map[string]int64{}}
	var bad []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "ACK":
			c.lastAck, _ = strconv.Atoi(f[1])
		case "COMMIT":
			i, _ := strconv.Atoi(f[1])
			tid, _ := strconv.ParseUint(f[2], 10, 64)
			c.commits[i] = TID(tid)
			c.lastAck = i
		case "START":
			c.stage = "start"
		case "P":
			if _, ok := c.times[f[1]]; !ok {
				c.times[f[1]], _ = strconv.ParseInt(f[4], 10, 64)
				c.items[f[1]], _ = strconv.ParseInt(f[3], 10, 64)
			}
			c.stage, c.progress = f[1], strings.Join(f[1:4], " ")
		case "DONE":
			c.done, c.stage = true, "done"
			c.total, _ = strconv.ParseInt(f[1], 10, 64)
			c.progress = strings.Join(f[2:], " ")
			if stage != "done" {
				// The child was aimed at a stage it passed: stop it
				// anyway, a little later, with writes going on.
				time.AfterFunc(time.Duration(rnd.IntN(30))*time.Millisecond, kill)
			}
		default:
			bad = append(bad, sc.Text())
			kill()
		}
	}
	cmd.Wait()
	if len(bad) > 0 {
		t.Fatalf("child: %s\n%s", strings.Join(bad, "\n"), stderr.String())
	}
	if e := stderr.String(); strings.Contains(e, "DATA RACE") || strings.Contains(e, "panic:") {
		t.Fatalf("child:\n%s", e)
	}
	return c
}

// pcState is the parent's account of the store through a round.
type pcState struct {
	base       *pcBase
	exp        pcExpect
	now        time.Time
	live       model         // the live state the next child starts from
	remembered map[TID]model // moments the children's writers committed
}

// replayChild works out which of the child's operations survived and
// checks the live state and the committed moments.
func (st *pcState) replayChild(t *testing.T, s *Store, c pcChild, seed uint64, what string) {
	t.Helper()
	if seed == 0 {
		if err := checkAt(s, Live, st.live); err != nil {
			t.Fatalf("%s: live state: %v", what, err)
		}
		return
	}
	// The state after k operations, for k from 0 on: the first one at or
	// after the last acknowledged that the store reads is the recovered
	// one. Every commit is acknowledged, so all are met before it.
	w := newWorkload(seed)
	m := st.live.clone()
	for k := 0; k <= c.lastAck+200; k++ {
		if tid, ok := c.commits[k-1]; ok {
			st.remembered[tid] = m.clone()
		}
		if k > c.lastAck && checkAt(s, Live, m) == nil {
			st.live = m
			return
		}
		m.apply(w.next())
	}
	want := newWorkload(seed)
	m = st.live.clone()
	for k := 0; k <= c.lastAck; k++ {
		m.apply(want.next())
	}
	t.Fatalf("%s: the live state is no prefix at or after the last acknowledged operation %d: %v",
		what, c.lastAck, checkAt(s, Live, m))
}

// checkMoments checks every moment of the base and every one the writers
// committed. With final set, the pass has run to its end: every moment
// the policy does not keep must be collapsed.
func (st *pcState) checkMoments(t *testing.T, s *Store, what string, final bool) (collapsed int) {
	t.Helper()
	for tid, m := range st.remembered {
		if err := checkAt(s, tid, m); err != nil {
			t.Fatalf("%s: a moment the writer committed changed: %v", what, err)
		}
	}
	own := 0
	for i, tid := range st.base.txns {
		got, ok, err := s.Moment(tid)
		if err != nil || !ok {
			t.Fatalf("%s: Moment(%s): %v %v", what, tid, ok, err)
		}
		want := st.exp.target[tid]
		switch {
		case st.exp.kept[tid]:
			if got != tid {
				t.Fatalf("%s: kept moment %d of %d (%s) reads as %s", what, i, len(st.base.txns), tid, got)
			}
		case got == tid:
			if final {
				t.Fatalf("%s: moment %d of %d (%s) was not collapsed into %s", what, i, len(st.base.txns), tid, want)
			}
			own++
		case got == want:
			collapsed++
		default:
			t.Fatalf("%s: moment %d of %d (%s) reads as %s, the policy collapses it into %s", what, i, len(st.base.txns), tid, got, want)
		}
		if err := checkAt(s, tid, st.base.states[got]); err != nil {
			t.Fatalf("%s: moment %d of %d (%s, kept %v, reads as %s): %v", what, i, len(st.base.txns), tid, st.exp.kept[tid], got, err)
		}
	}
	// The collapse frame is one frame: a pass collapses all or nothing.
	if own > 0 && collapsed > 0 {
		t.Fatalf("%s: %d moments collapsed and %d not: the collapse was not atomic", what, collapsed, own)
	}
	return collapsed
}

func pcVerify(t *testing.T, s *Store, what string) {
	t.Helper()
	rep, err := s.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("%s: verify: %v %v", what, err, rep)
	}
	if left, _ := filepath.Glob(filepath.Join(s.logDir(), "*.new")); len(left) > 0 {
		t.Fatalf("%s: half-rewritten log segments left: %v", what, left)
	}
}

// checkLeftovers: every record left is seen by a kept moment (a kept base
// moment, or one at or after now: the writers'), and the packs hold at
// most twice the bytes of the blocks the index still references, plus
// one pack.
func (st *pcState) checkLeftovers(t *testing.T, s *Store, what string) {
	t.Helper()
	var kept []TID
	for _, tid := range st.base.txns {
		if st.exp.kept[tid] {
			kept = append(kept, tid)
		}
	}
	now := TIDAt(st.now)
	txns, err := s.momentTxns()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range txns {
		if tid >= now {
			kept = append(kept, tid)
		}
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i] < kept[j] })
	needed, err := checkRecordsKept(s, kept)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	got, err := s.Stats(0)
	if err != nil {
		t.Fatal(err)
	}
	if got.BlockBytes > 2*needed+pack.MaxSize {
		t.Fatalf("%s: %d bytes of packs left, the kept states need %d", what, got.BlockBytes, needed)
	}
	if st.exp.first != 0 && got.Oldest != st.exp.first {
		t.Fatalf("%s: oldest moment %s, want %s", what, got.Oldest, st.exp.first)
	}
}

func TestPruneCrashKill9(t *testing.T) {
	race := raceEnabled()
	ops, rounds, minRounds, budget := 400, 20, 10, 32*time.Second
	switch {
	case testing.Short() && race:
		ops, rounds, minRounds, budget = 120, 5, 3, 25*time.Second
	case testing.Short():
		ops, rounds, minRounds, budget = 200, 6, 4, 15*time.Second
	case race:
		ops, rounds, minRounds, budget = 200, 10, 6, 30*time.Second
	}
	defer func(s, p int64) { txlog.SegmentSize, pack.MaxSize = s, p }(txlog.SegmentSize, pack.MaxSize)
	txlog.SegmentSize, pack.MaxSize = pcSegMax, pcPackMax
	begin := time.Now()
	tmp := t.TempDir()
	base := buildPruneCrashBase(t, filepath.Join(tmp, "base"), ops, 77)
	t.Logf("base: %d transactions over %v, %d bytes on disk, built in %v",
		len(base.txns), base.end.Sub(base.txns[0].Time()).Round(time.Minute), storeBytes(base.dir), time.Since(begin).Round(time.Millisecond))
	rnd := rand.New(rand.NewPCG(42, 43))
	// Each stage's duration and number of items (packs, segments), per
	// policy, learnt from the first rounds, which are not killed.
	type stageStat struct{ dur, items int64 }
	learnt := make([]map[string]stageStat, len(pcPolicies))
	learn := func(pi int, c pcChild) {
		at := map[string]int64{"start": 0, "done": c.total}
		for k, v := range c.times {
			at[k] = v
		}
		m := map[string]stageStat{"done": {dur: 20000}}
		for i, s := range pcStages[:len(pcStages)-1] {
			a, ok1 := at[s]
			b, ok2 := at[pcStages[i+1]]
			if ok1 && ok2 && b > a {
				m[s] = stageStat{dur: b - a, items: c.items[s]}
			}
		}
		learnt[pi] = m
	}
	calibration := len(pcPolicies)
	hits := map[string]int{}
	seedN := uint64(1000)
	played := 0
	for round := 0; round < rounds; round++ {
		if round >= minRounds && time.Since(begin) > budget {
			t.Logf("stopping after %d rounds: %v spent", round, time.Since(begin).Round(time.Millisecond))
			break
		}
		played++
		pi := round % len(pcPolicies)
		now := base.end.Add(time.Duration(1+rnd.IntN(360)) * time.Minute)
		dir := filepath.Join(tmp, fmt.Sprintf("r%d", round))
		copyTree(t, base.dir, dir, nil)
		st := &pcState{base: base, exp: pruneCrashExpect(base, pcPolicies[pi], now), now: now,
			live: base.last, remembered: map[TID]model{}}
		kills := 1
		if round >= calibration && rnd.IntN(3) == 0 {
			kills = 2 // the pass is killed, resumed and killed again
		}
		for k := 0; k < kills; k++ {
			stage := "none" // the first rounds run the pass to its end
			var frac float64
			var delay time.Duration
			if round >= calibration {
				stage = pcStages[(round-calibration+k)%len(pcStages)]
				if k > 0 {
					stage = pcStages[rnd.IntN(len(pcStages))]
				}
				ss := learnt[pi][stage]
				span := ss.dur
				if stage == "packs" || stage == "log" {
					// Aim at one pack or segment, somewhere in its rewrite.
					frac = rnd.Float64()
					span /= max(1, ss.items)
				}
				delay = time.Duration(rnd.Int64N(span+1)) * time.Microsecond
			}
			seed := uint64(0)
			if round%4 != 3 { // most rounds write while the cleaner runs
				seedN++
				seed = seedN
			}
			c := runPruneCrashChild(t, dir, now, pi, seed, stage, frac, delay, rnd)
			if round < calibration {
				learn(pi, c)
			}
			hits[c.stage]++
			aim := stage
			if frac > 0 {
				aim = fmt.Sprintf("%s %.2f", stage, frac)
			}
			what := fmt.Sprintf("round %d kill %d (aimed at %s +%v, landed in %s %s)", round, k+1, aim, delay, c.stage, c.progress)
			s, err := Open(dir, Options{FlushInterval: time.Hour, Clock: func() time.Time { return now }})
			if err != nil {
				t.Fatalf("%s: reopen after kill -9: %v", what, err)
			}
			st.replayChild(t, s, c, seed, what)
			collapsed := st.checkMoments(t, s, what, false)
			pcVerify(t, s, what)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: writer acked %d ops, %d commits; %d moments collapsed", what, c.lastAck+1, len(c.commits), collapsed)
		}
		// A whole pass finishes what the killed ones left.
		s, err := Open(dir, Options{FlushInterval: time.Hour, Clock: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := s.Prune(pcPolicies[pi], PruneOptions{})
		if err != nil {
			t.Fatalf("round %d: the pass after the kills: %v", round, err)
		}
		what := fmt.Sprintf("round %d after a whole pass", round)
		st.checkMoments(t, s, what, true)
		if err := checkAt(s, Live, st.live); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		st.checkLeftovers(t, s, what)
		pcVerify(t, s, what)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d records, %d versions, %d blocks, %d packs, %d segments", what, rep.Records, rep.Versions, rep.Blocks, rep.Packs, rep.Segments)
		os.RemoveAll(dir)
	}
	t.Logf("%d rounds in %v; kills landed in: %v; stages (µs, items) by policy: %v", played, time.Since(begin).Round(time.Millisecond), hits, learnt)
}
