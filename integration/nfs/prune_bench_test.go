package nfs_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asof/asof/integration/serverproc"
)

// BenchmarkNFSReadDuringPrune: the latency of live NFS READs from a client
// while the cleaner thins a store full of history, against the same reads
// with no cleaner running. The history (ASOF_PRUNE_FILES files, default
// 20,000, each written ASOF_PRUNE_VERSIONS times, default 5, in separate
// transactions) is written by a server without a policy; the reads run
// there for a few seconds ("idle"), then the server restarts with a policy
// that thins all of it ("1s for 2s"), whose first pass starts at once, and
// the reads run again until that pass ends ("pruning").
//
//	go test -run xxx -bench NFSReadDuringPrune -benchtime 1x ./integration/nfs/
func BenchmarkNFSReadDuringPrune(b *testing.B) {
	if _, err := os.Stat("/usr/bin/nfs-ls"); err != nil {
		b.Skip("libnfs-utils missing")
	}
	files, versions := envInt("ASOF_PRUNE_FILES", 20000), envInt("ASOF_PRUNE_VERSIONS", 5)
	data := b.TempDir() + "/data"
	env := map[string]string{"ASOF_HISTORY_FLUSH_INTERVAL": "100ms"}
	s := serverproc.Start(b, serverproc.Options{NoNineP: true, DataDir: data, Env: env})
	const conns = 4
	fhs := make([][]byte, files)
	build := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			p := dialProto(b, s.NFSAddr, "/")
			for i := c; i < files; i += conns {
				st, fh := p.create(p.root, fmt.Sprintf("f%06d", i))
				if st != nfsOK {
					b.Errorf("CREATE: %s", statusName(st))
					return
				}
				fhs[i] = fh
			}
			for v := 0; v < versions; v++ {
				buf := []byte(strings.Repeat(fmt.Sprintf("version %d ", v), 100))
				for i := c; i < files; i += conns {
					if st := p.write(fhs[i], 0, buf); st != nfsOK {
						b.Errorf("WRITE: %s", statusName(st))
						return
					}
				}
			}
		}(c)
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	b.Logf("history: %d files x %d versions written in %v", files, versions, time.Since(build).Round(time.Second))
	time.Sleep(3 * time.Second) // every version older than the policy's windows

	read := func(addr string, until func() bool) []time.Duration {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for c := 0; c < 2; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				p := dialProto(b, addr, "/")
				r := rand.New(rand.NewPCG(uint64(c), 1))
				var mine []time.Duration
				for !until() {
					t0 := time.Now()
					if st, _, _ := p.read(fhs[r.IntN(files)], 0, 4096); st != nfsOK {
						b.Errorf("READ: %s", statusName(st))
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}(c)
		}
		wg.Wait()
		return lat
	}
	deadline := time.Now().Add(5 * time.Second)
	idle := read(s.NFSAddr, func() bool { return time.Now().After(deadline) })
	if code, err := s.Term(); err != nil || code != 0 {
		b.Fatalf("stop: %d %v", code, err)
	}

	env["ASOF_RETENTION"] = "1s for 2s"
	s2 := serverproc.Start(b, serverproc.Options{NoNineP: true, DataDir: data, Env: env})
	passDone := func() bool { return strings.Contains(s2.Log(), `msg="cleaner pass"`) }
	pruning := read(s2.NFSAddr, passDone)
	for !passDone() {
		time.Sleep(100 * time.Millisecond)
	}
	took := regexp.MustCompile(`msg="cleaner pass".* records=(\d+).* took=(\S+)`).FindStringSubmatch(s2.Log())
	if took == nil {
		b.Fatalf("no cleaner pass in the log:\n%s", s2.Log())
	}
	pi, pp := percentiles(idle), percentiles(pruning)
	b.Logf("cleaner pass: %s records removed in %s", took[1], took[2])
	b.Logf("idle:    %d reads, p50 %v, p99 %v, max %v", len(idle), pi[0], pi[1], pi[2])
	b.Logf("pruning: %d reads, p50 %v, p99 %v, max %v", len(pruning), pp[0], pp[1], pp[2])
	b.ReportMetric(float64(pi[1].Microseconds()), "idle-p99-µs")
	b.ReportMetric(float64(pp[1].Microseconds()), "prune-p99-µs")
	b.ReportMetric(float64(pp[2].Microseconds()), "prune-max-µs")
}

func percentiles(d []time.Duration) [3]time.Duration {
	if len(d) == 0 {
		return [3]time.Duration{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return [3]time.Duration{d[len(d)/2], d[len(d)*99/100], d[len(d)-1]}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
