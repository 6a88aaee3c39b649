// Command vmrun is the benchmarks' bridge to the project's VM harness (integration/vm): it
// boots the Linux guest once against a server command and prints the workload's result
// lines. nfs.sh and ninep.sh call it; it is not a test.
//
//	vmrun run [flags] -- SERVER ARGV...   boot the guest, run -workload, print "BENCH ..." lines
//	vmrun gen MIB (or benchgen MIB)      write MIB MiB of data no store can deduplicate to stdout
//
// The guest gets this same binary (built static) as /usr/bin/benchgen, so that the workload
// can write data that is neither zeros nor repeated: every 4 KiB block carries its offset and
// a per-run nonce, so content-addressed storage (asof) stores every block, as a plain
// directory does.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/asof/asof/integration/vm"
)

func main() {
	if filepath.Base(os.Args[0]) == "benchgen" { // in the guest
		os.Exit(gen(os.Args[1:]))
	}
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
	case "gen":
		os.Exit(gen(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: vmrun run [flags] -- SERVER ARGV... | vmrun gen MIB")
	os.Exit(2)
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func run(args []string) int {
	f := flag.NewFlagSet("run", flag.ExitOnError)
	var env, files multi
	nfsPort := f.Int("nfs-port", 0, "NFS port of the server (0: no NFS mount)")
	nfsExport := f.String("nfs-export", "/", "NFS export to mount")
	nfsOpts := f.String("nfs-opts", "", "extra NFS mount options (later options win: mountport=N)")
	p9Port := f.Int("9p-port", 0, "9P port of the server (0: no 9P mount)")
	p9Aname := f.String("9p-aname", "", "9P attach name")
	p9Opts := f.String("9p-opts", "", "extra 9P mount options")
	workload := f.String("workload", "", "busy box sh workload (host path)")
	timeout := f.Duration("timeout", 30*time.Minute, "bound on boot and workload")
	logPath := f.String("log", "", "write the guest console and the server log here")
	f.Var(&env, "env", "KEY=VALUE for the server (repeatable; @HOST@, @GUESTNET@ expand)")
	f.Var(&files, "file", "GUESTPATH=HOSTPATH added to the guest (repeatable)")
	f.Parse(args)
	argv := f.Args()
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "vmrun run: no server command after --")
		return 2
	}
	o := vm.Options{
		Server:       vm.Command{Argv: argv, Env: env},
		NFSPort:      *nfsPort,
		NFSExport:    *nfsExport,
		NFSOptions:   *nfsOpts,
		NinePPort:    *p9Port,
		NinePAname:   *p9Aname,
		NinePOptions: *p9Opts,
		Workload:     *workload,
		Files:        map[string]string{},
		Timeout:      *timeout,
		Logf: func(format string, a ...any) {
			fmt.Fprintf(os.Stderr, "vm: "+format+"\n", a...)
		},
	}
	for _, fl := range files {
		g, h, ok := strings.Cut(fl, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "vmrun run: -file %q is not GUEST=HOST\n", fl)
			return 2
		}
		o.Files[g] = h
	}
	// SIGINT/SIGTERM end the run through its context, so that the harness still removes
	// its namespace and stops the server and qemu.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := vm.Run(ctx, o)
	if *logPath != "" {
		os.WriteFile(*logPath, []byte(res.Console+"\n=== server log ===\n"+res.ServerLog), 0o644)
	}
	for _, l := range strings.Split(res.Console, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "BENCH ") {
			fmt.Println(l)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// gen writes MIB MiB: a random 1 MiB pattern, with the block's offset and a per-run nonce
// in the first 16 bytes of every 4 KiB block, in 1 MiB writes.
func gen(args []string) int {
	if len(args) != 1 {
		usage()
	}
	mib, err := strconv.Atoi(args[0])
	if err != nil || mib < 0 {
		usage()
	}
	const mb, blk = 1 << 20, 4096
	nonce := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(nonce, uint64(os.Getpid())))
	pat := make([]byte, mb)
	for i := 0; i < mb; i += 8 {
		binary.LittleEndian.PutUint64(pat[i:], r.Uint64())
	}
	buf := make([]byte, mb)
	for m := 0; m < mib; m++ {
		copy(buf, pat)
		for b := 0; b < mb; b += blk {
			binary.LittleEndian.PutUint64(buf[b:], uint64(m)*mb+uint64(b))
			binary.LittleEndian.PutUint64(buf[b+8:], nonce)
		}
		if _, err := os.Stdout.Write(buf); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			return 1
		}
	}
	return 0
}
