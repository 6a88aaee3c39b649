package vm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/integration/serverproc"
	"github.com/asof/asof/integration/vm"
)

// nfsScenarioServer is asof for the scenario boots: the guest's network allowed, history
// at a 100ms grain, or at $ASOF_VM_FLUSH_INTERVAL: the time-travel scenario must pass at
// any grain (1ms puts a file's creation and its first write in different transactions,
// 2s puts many changes in one); it returns the command and its control socket.
// exports.squash is none: the scenarios run as the guest's root and mean root acting as
// root (cp -a keeps owners; git refuses a repository its user does not own), as against
// knfsd with no_root_squash. Identity has its own test (identity_test.go).
func nfsScenarioServer(t *testing.T, proto string) (vm.Command, string) {
	bin := serverproc.Binary(t)
	flush := "100ms"
	if v := os.Getenv("ASOF_VM_FLUSH_INTERVAL"); v != "" {
		flush = v
	}
	dir, err := os.MkdirTemp("", "asof-vm-sock-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "control.sock")
	return vm.Command{
		Argv: []string{bin, "serve"},
		Env: []string{
			"ASOF_DATA=" + filepath.Join(t.TempDir(), "data"),
			"ASOF_NFS_LISTEN=@HOST@:2049",
			"ASOF_NINEP_LISTEN=@HOST@:5640",
			"ASOF_CONTROL_SOCKET=" + sock,
			"ASOF_EXPORTS_ALLOW=@GUESTNET@",
			"ASOF_HISTORY_FLUSH_INTERVAL=" + flush,
			"ASOF_EXPORTS_SQUASH=none",
		},
	}, sock
}

// asofAdmin runs an asof admin command against the server behind sock.
func asofAdmin(ctx context.Context, t *testing.T, sock string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, serverproc.Binary(t), args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ASOF_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "ASOF_CONTROL_SOCKET="+sock)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("asof %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// version is one entry of asof history --json.
type version struct {
	TID  string    `json:"tid"`
	Time time.Time `json:"time"`
}

// versions is asof history --json PATH: the committed versions of PATH, oldest first.
func versions(ctx context.Context, t *testing.T, sock, path string) ([]version, error) {
	out, err := asofAdmin(ctx, t, sock, "history", "--json", path)
	if err != nil {
		return nil, err
	}
	var vs []version
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		return nil, fmt.Errorf("asof history --json %s: %v: %s", path, err, out)
	}
	return vs, nil
}

// scenarioRE matches the workload's verdict lines.
var scenarioRE = regexp.MustCompile(`(?m)^GUEST: scenario (\S+): (pass|FAIL.*)$`)

// The Linux kernel NFSv3 client against asof, several scenarios in one boot
// (workloads/nfs_scenarios.sh): cp -a of a tree with hard links and symlinks in and out
// with diff -r; git; rename of an open file; hard links; rmdir of a non-empty directory
// and names with @@; ls dir@@WHEN, diff -r between a live and a historical directory,
// writes into the past. Each scenario is reported as a subtest with its part of the console.
func TestNFSScenarios(t *testing.T) { runScenarios(t, "nfs") }

// The same scenarios through the Linux kernel's v9fs client.
func TestNinePScenarios(t *testing.T) { runScenarios(t, "9p") }

func runScenarios(t *testing.T, proto string) {
	if testing.Short() {
		t.Skip("boots a Linux guest; skipped with -short")
	}
	if err := vm.Available(); err != nil {
		t.Skip(err)
	}
	srv, sock := nfsScenarioServer(t, proto)
	ctx := context.Background()
	onCall := func(ctx context.Context, words []string) (string, error) {
		switch {
		case len(words) == 1 && words[0] == "now":
			return time.Now().UTC().Format(time.RFC3339Nano), nil
		case (len(words) == 2 || len(words) == 3) && words[0] == "tids":
			// tids PATH [UNTIL]: the transaction ids of PATH's versions, oldest first; with
			// UNTIL (RFC 3339) only those committed at or before it.
			until := time.Unix(1<<40, 0)
			if len(words) == 3 {
				var err error
				if until, err = time.Parse(time.RFC3339Nano, words[2]); err != nil {
					return "", err
				}
			}
			vs, err := versions(ctx, t, sock, words[1])
			if err != nil {
				return "", err
			}
			var tids []string
			for _, v := range vs {
				if !v.Time.After(until) {
					tids = append(tids, v.TID)
				}
			}
			return strings.Join(tids, " "), nil
		case len(words) == 2 && words[0] == "committed":
			// committed PATH: waits until PATH has a committed version (asof history lists
			// nothing else) and prints its transaction id.
			deadline := time.Now().Add(30 * time.Second)
			for {
				vs, err := versions(ctx, t, sock, words[1])
				if err != nil {
					return "", err
				}
				if len(vs) > 0 {
					return vs[0].TID, nil
				}
				if time.Now().After(deadline) {
					return "", fmt.Errorf("%s: no committed version after 30s", words[1])
				}
				time.Sleep(20 * time.Millisecond)
			}
		case len(words) == 3 && words[0] == "after":
			// after WHEN DURATION: returns once the clock is DURATION past WHEN.
			when, err := time.Parse(time.RFC3339Nano, words[1])
			if err != nil {
				return "", err
			}
			d, err := time.ParseDuration(words[2])
			if err != nil {
				return "", err
			}
			time.Sleep(time.Until(when.Add(d)) + time.Millisecond)
			return time.Now().UTC().Format(time.RFC3339Nano), nil
		}
		return "", fmt.Errorf("unknown call %q", words)
	}
	o := vm.Options{
		Server:   srv,
		Workload: "workloads/nfs_scenarios.sh",
		OnCall:   onCall,
		Timeout:  4 * time.Minute,
		Logf:     t.Logf,
	}
	if proto == "nfs" {
		o.NFSPort = 2049
	} else {
		o.NinePPort = 5640
	}
	res, runErr := vm.Run(ctx, o)
	t.Logf("boot %v, whole run %v", res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))

	verdicts := map[string]string{}
	for _, m := range scenarioRE.FindAllStringSubmatch(res.Console, -1) {
		verdicts[m[1]] = m[2]
	}
	for _, name := range []string{"cp-a", "git", "rename-open", "hardlink", "errors", "timetravel"} {
		t.Run(name, func(t *testing.T) {
			v, ok := verdicts[name]
			switch {
			case !ok:
				t.Errorf("scenario %s did not finish\n%s", name, scenarioConsole(res.Console, name))
			case v != "pass":
				t.Errorf("scenario %s: %s\n%s", name, v, scenarioConsole(res.Console, name))
			}
		})
	}
	if runErr != nil {
		t.Fatal(runErr)
	}
	if res.ServerExit != 0 {
		t.Errorf("asof exited %d on SIGTERM at the end, want 0", res.ServerExit)
	}
}

// scenarioConsole is the console from the scenario's start line to its verdict (or the end).
func scenarioConsole(console, name string) string {
	i := strings.Index(console, "--- scenario "+name+"\n")
	if i < 0 {
		return "(no output: the guest did not get there)\n" + tailLines(console, 30)
	}
	s := console[i:]
	if j := strings.Index(s, "GUEST: scenario "+name+":"); j >= 0 {
		s = s[:j]
	}
	return s
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
