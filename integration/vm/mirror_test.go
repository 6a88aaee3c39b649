package vm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/integration/serverproc"
	"github.com/asof/asof/integration/vm"
)

// Ports of the mirror boot, all on vm.HostIP: the source serves the guest's own mounts
// (vm.Options' NFSPort and NinePPort), the target is mounted by the workload itself.
const (
	mirrorSourceNFS   = 2049
	mirrorSourceNineP = 5640
	mirrorTargetNFS   = 2050
	mirrorTargetNineP = 5641
	mirrorListen      = 5642
)

// mirrorPair is the server command of the mirror boot: bash starts a source and, once the
// source has made its token, a target that follows it, both inside the run's namespace
// (vm.Options runs one command; the pair is that command). SIGTERM stops both and the
// script exits with their statuses or'ed; either exiting on its own ends the script, which
// the harness reports as the server dying; both die with the script (a parent-death
// signal), as the harness's one server dies with the test. Each log line says which server
// wrote it.
const mirrorPair = `
set -u
serve() { # NAME DATA SOCK NFSPORT 9PPORT EXTRA...
  name=$1 data=$2 sock=$3 nfs=$4 p9=$5; shift 5
  env ASOF_DATA="$data" ASOF_CONTROL_SOCKET="$sock" \
    ASOF_NFS_LISTEN="$MVM_HOST:$nfs" ASOF_NINEP_LISTEN="$MVM_HOST:$p9" \
    ASOF_EXPORTS_ALLOW="$MVM_NET" ASOF_EXPORTS_SQUASH=none \
    ASOF_HISTORY_FLUSH_INTERVAL="$MVM_FLUSH" "$@" \
    setpriv --pdeathsig KILL "$MVM_BIN" serve > >(sed -u "s/^/$name: /") 2>&1 &
}
# $1..$5: the source's NFS and 9P ports, the target's, the source's mirror port
serve source "$MVM_DIR/source" "$MVM_SOCK/source.sock" "$1" "$2" ASOF_MIRROR_LISTEN="$MVM_HOST:$5"
src=$!
for i in $(seq 300); do [ -s "$MVM_DIR/source/mirror.token" ] && break; sleep 0.1; done
serve target "$MVM_DIR/target" "$MVM_SOCK/target.sock" "$3" "$4" \
  ASOF_MIRROR_SOURCE="$MVM_HOST:$5" ASOF_MIRROR_TOKEN_FILE="$MVM_DIR/source/mirror.token"
dst=$!
trap 'kill -TERM $src $dst 2>/dev/null; wait $src; a=$?; wait $dst; b=$?; exit $((a | b))' TERM
wait -n $src $dst
rc=$?
echo "mirror pair: a server exited on its own with status $rc"
kill -TERM $src $dst 2>/dev/null
exit 1
`

// The Linux kernel's NFSv3 client writes a tree on a source (cp -a of directories with
// files, symlinks and hard links, then renames, deletes, rewrites, over several flush
// intervals; workloads/mirror.sh); once a target following it holds the source's newest
// transaction, the kernel mounts the target: a write is refused with "Read-only file
// system", and diff -r and a listing of types, modes, link counts, sizes, owners, symlink
// targets and mtimes find no difference between the target's live tree and the source's
// tree at that transaction, nor between the two at earlier moments, over NFS and 9P.
func TestMirrorTargetReadsAsSourceInTheKernel(t *testing.T) {
	needVM(t)
	bin := serverproc.Binary(t)
	sockDir, err := os.MkdirTemp("", "asof-vm-sock-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	srcSock := filepath.Join(sockDir, "source.sock")
	dstSock := filepath.Join(sockDir, "target.sock")
	srv := vm.Command{
		Argv: []string{"/bin/bash", "-c", mirrorPair, "mirror-pair",
			fmt.Sprint(mirrorSourceNFS), fmt.Sprint(mirrorSourceNineP),
			fmt.Sprint(mirrorTargetNFS), fmt.Sprint(mirrorTargetNineP), fmt.Sprint(mirrorListen)},
		Env: []string{
			"MVM_BIN=" + bin,
			"MVM_DIR=" + t.TempDir(),
			"MVM_SOCK=" + sockDir,
			"MVM_HOST=@HOST@",
			"MVM_NET=@GUESTNET@",
			"MVM_FLUSH=100ms",
		},
	}
	// the workload mounts the target itself: tell it where
	conf := filepath.Join(t.TempDir(), "asof-mirror.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("target_nfs=%d target_9p=%d\n",
		mirrorTargetNFS, mirrorTargetNineP)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	last := func(sock string) (uint64, error) {
		out, err := asofAdmin(ctx, t, sock, "mirror", "status", "--json")
		if err != nil {
			return 0, err
		}
		var st struct {
			Last uint64 `json:"last"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return 0, fmt.Errorf("asof mirror status --json: %v: %s", err, out)
		}
		return st.Last, nil
	}
	tid := func(n uint64) string { return fmt.Sprintf("0x%016x", n) }
	onCall := func(ctx context.Context, words []string) (string, error) {
		switch {
		case len(words) == 1 && words[0] == "newest":
			// newest: the source's newest transaction id, once a flush interval has
			// passed since the call (what the guest synced is committed by then).
			time.Sleep(300 * time.Millisecond)
			n, err := last(srcSock)
			return tid(n), err
		case len(words) == 1 && words[0] == "caught-up":
			// caught-up: once a flush interval has passed since the call (what the guest
			// synced is committed by then), waits until the target's newest transaction
			// is the source's and prints it.
			time.Sleep(300 * time.Millisecond)
			deadline := time.Now().Add(60 * time.Second)
			for {
				s, err := last(srcSock)
				if err != nil {
					return "", err
				}
				d, err := last(dstSock)
				if err != nil {
					return "", err
				}
				if s == d {
					return tid(d), nil
				}
				if time.Now().After(deadline) {
					return "", fmt.Errorf("the target is at %s after 60s, the source at %s", tid(d), tid(s))
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		return "", fmt.Errorf("unknown call %q", words)
	}
	o := vm.Options{
		Server:    srv,
		NFSPort:   mirrorSourceNFS,
		NinePPort: mirrorSourceNineP,
		Together:  true,
		Workload:  "workloads/mirror.sh",
		Files:     map[string]string{"/etc/asof-mirror.conf": conf},
		OnCall:    onCall,
		Timeout:   5 * time.Minute,
		Logf:      t.Logf,
	}
	res, runErr := vm.Run(ctx, o)
	t.Logf("boot %v, whole run %v", res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))
	verdicts := map[string]string{}
	for _, m := range scenarioRE.FindAllStringSubmatch(res.Console, -1) {
		verdicts[m[1]] = m[2]
	}
	for _, name := range []string{"write", "caught-up", "erofs", "nfs-live", "nfs-past", "9p"} {
		t.Run(name, func(t *testing.T) {
			v, ok := verdicts[name]
			switch {
			case !ok:
				t.Errorf("scenario %s did not finish\n%s", name, scenarioConsole(res.Console, name))
			case v != "pass":
				t.Errorf("scenario %s: %s\n%s", name, v, scenarioConsole(res.Console, name))
			case testing.Verbose():
				t.Logf("what was checked:\n%s", scenarioConsole(res.Console, name))
			}
		})
	}
	if runErr != nil {
		t.Fatalf("%v\n--- server log (tail) ---\n%s", runErr, tailLines(res.ServerLog, 40))
	}
	if res.ServerExit != 0 {
		t.Errorf("the source and target exited %d on SIGTERM at the end, want 0\n%s", res.ServerExit, tailLines(res.ServerLog, 20))
	}
	if !strings.Contains(res.ServerLog, "target: ") {
		t.Errorf("no line from the target in the server log")
	}
}
