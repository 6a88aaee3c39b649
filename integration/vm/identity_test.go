package vm_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/asof/asof/integration/testusers"
	"github.com/asof/asof/integration/vm"
)

// Several users of one Linux client share asof over NFS and 9P at once
// (workloads/identity.sh, one boot, both mounts): what each makes is theirs, modes and
// group bits keep the others out, sticky and setgid directories behave as on a local
// filesystem, chown to another user is refused, root is squashed to 65534, and NFS and 9P
// show the same owners. Each scenario is a subtest with its part of the console.
func TestIdentity(t *testing.T) { identity(t, "root") }

// The same with exports.squash=none: root acts as root.
func TestIdentityNoSquash(t *testing.T) { identity(t, "none") }

func identity(t *testing.T, squash string) {
	needVM(t)
	// 9P takes a caller's groups from the server's user database: the server runs here
	ids, err := testusers.Ensure()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "asof-identity.conf")
	body := fmt.Sprintf("U1=%d G1=%d U2=%d G2=%d U3=%d G3=%d GS=%d squash=%s\n",
		ids.U1, ids.G1, ids.U2, ids.G2, ids.U3, ids.G3, ids.Shared, squash)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := asof(t)
	if squash != "root" { // root is the default: the other boot runs without the key
		srv.Env = append(srv.Env, "ASOF_EXPORTS_SQUASH="+squash)
	}
	o := vm.Options{
		Server:       srv,
		NFSPort:      2049,
		NinePPort:    5640,
		NinePOptions: "access=user", // v9fs's default, said out loud: one attach per local user
		Together:     true,
		Workload:     "workloads/identity.sh",
		Files:        map[string]string{"/etc/asof-identity.conf": conf},
		Timeout:      6 * time.Minute, // ~1.5 min on 2 busy cores
		Logf:         t.Logf,
	}
	res, runErr := vm.Run(context.Background(), o)
	t.Logf("boot %v, whole run %v", res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))
	verdicts := map[string]string{}
	for _, m := range scenarioRE.FindAllStringSubmatch(res.Console, -1) {
		verdicts[m[1]] = m[2]
	}
	names := []string{"setup"}
	for _, p := range []string{"nfs", "9p"} {
		for _, s := range []string{"owners", "modes", "groups", "sticky", "setgid", "chown", "root"} {
			names = append(names, p+"/"+s)
		}
	}
	names = append(names, "cross/owners")
	for _, name := range names {
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
		t.Fatal(runErr)
	}
	if res.ServerExit != 0 {
		t.Errorf("asof exited %d on SIGTERM at the end, want 0", res.ServerExit)
	}
}
