package history

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test runs the engine in a child process (this test binary,
// re-executed), kills it with SIGKILL at a random moment of a write, sync
// and commit workload, reopens the store and checks that every write the
// child was told is durable is there, that the store holds exactly a prefix
// of the operations, and that every moment committed before reads as it
// did.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("ASOF_CRASH_DIR")
	if dir == "" {
		t.Skip("runs only as the child of TestCrashKill9")
	}
	seed, _ := strconv.ParseUint(os.Getenv("ASOF_CRASH_SEED"), 10, 64)
	s, err := Open(dir, Options{FlushInterval: 40 * time.Millisecond})
	if err != nil {
		fmt.Println("OPEN-FAILED", err)
		os.Exit(1)
	}
	w := newWorkload(seed)
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		if err := applyStore(s, w.next()); err != nil {
			fmt.Fprintln(out, "ERROR", err)
			out.Flush()
			os.Exit(1)
		}
		switch {
		case i%25 == 24:
			tid, err := s.Commit()
			if err != nil {
				os.Exit(1)
			}
			fmt.Fprintln(out, "COMMIT", i, uint64(tid))
			out.Flush()
		case i%4 == 3:
			if err := s.Durable(); err != nil {
				os.Exit(1)
			}
			fmt.Fprintln(out, "ACK", i)
			out.Flush()
		}
	}
}

func TestCrashKill9(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 8
	}
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(42, 42))
	base := model{} // the store's state at the start of a round
	remembered := map[TID]model{}
	for round := 0; round < rounds; round++ {
		seed := uint64(1000 + round)
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "ASOF_CRASH_DIR="+dir, "ASOF_CRASH_SEED="+strconv.FormatUint(seed, 10))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		time.AfterFunc(time.Duration(30+rnd.IntN(400))*time.Millisecond, func() { cmd.Process.Signal(syscall.SIGKILL) })
		lastAck := -1
		commits := map[int]TID{}
		for l := range lines {
			f := strings.Fields(l)
			switch f[0] {
			case "ACK":
				lastAck, _ = strconv.Atoi(f[1])
			case "COMMIT":
				i, _ := strconv.Atoi(f[1])
				tid, _ := strconv.ParseUint(f[2], 10, 64)
				commits[i] = TID(tid)
				lastAck = i
			default:
				t.Fatalf("child: %s", l)
			}
		}
		cmd.Wait()

		// Recompute the child's states; the recovered one must be one of
		// them, no earlier than the last acknowledged.
		w := newWorkload(seed)
		m := base.clone()
		states := []model{m.clone()} // states[k] = after k operations
		for i := 0; i < lastAck+200; i++ {
			m.apply(w.next())
			states = append(states, m.clone())
			if tid, ok := commits[i]; ok {
				remembered[tid] = states[i+1]
			}
		}
		s, err := Open(dir, Options{FlushInterval: time.Hour})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		found := -1
		for k := lastAck + 1; k < len(states); k++ {
			if checkAt(s, Live, states[k]) == nil {
				found = k
				break
			}
		}
		if found < 0 {
			t.Fatalf("round %d: the recovered state is no prefix at or after the last acknowledged operation %d: %v",
				round, lastAck, checkAt(s, Live, states[lastAck+1]))
		}
		for tid, mm := range remembered {
			if err := checkAt(s, tid, mm); err != nil {
				t.Fatalf("round %d: a committed moment changed: %v", round, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		base = states[found]
		t.Logf("round %d: killed after ack %d, recovered %d ops, %d moments checked", round, lastAck, found, len(remembered))
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rep, err := s.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify after the crashes: %v %+v", err, rep)
	}
}
