package vm_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
	ids := hostUsers(t)
	conf := filepath.Join(t.TempDir(), "asof-identity.conf")
	body := fmt.Sprintf("U1=%d G1=%d U2=%d G2=%d U3=%d G3=%d GS=%d squash=%s\n",
		ids.u1, ids.g1, ids.u2, ids.g2, ids.u3, ids.g3, ids.gs, squash)
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
		Timeout:      4 * time.Minute,
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

// testIDs are the numeric ids of the test users and groups in this machine's user
// database, which is the server's: 9P takes a caller's groups from it.
type testIDs struct {
	u1, g1, u2, g2, u3, g3, gs int
}

var (
	hostUsersOnce sync.Once
	hostUsersIDs  testIDs
	hostUsersErr  error
)

// hostUsers makes sure this machine has the test users, and returns their ids:
//
//	asoftest1, group asoftest1, also in asofshare
//	asoftest2, group asoftest2, also in asofshare
//	asoftest3, group asoftest3, in no other group
//
// It adds what is missing (useradd, groupadd: the tests run as root) with the ids 41001-3
// and 41010 when those are free, and leaves what is there, so that it can run any number
// of times.
func hostUsers(t *testing.T) testIDs {
	t.Helper()
	hostUsersOnce.Do(func() { hostUsersIDs, hostUsersErr = ensureHostUsers() })
	if hostUsersErr != nil {
		t.Fatal(hostUsersErr)
	}
	return hostUsersIDs
}

func ensureHostUsers() (testIDs, error) {
	var ids testIDs
	var err error
	if ids.gs, err = ensureGroup("asofshare", 41010); err != nil {
		return ids, err
	}
	users := []struct {
		name     string
		id       int
		shared   bool
		uid, gid *int
	}{
		{"asoftest1", 41001, true, &ids.u1, &ids.g1},
		{"asoftest2", 41002, true, &ids.u2, &ids.g2},
		{"asoftest3", 41003, false, &ids.u3, &ids.g3},
	}
	for _, u := range users {
		if *u.gid, err = ensureGroup(u.name, u.id); err != nil {
			return ids, err
		}
		if *u.uid, err = ensureUser(u.name, u.id, *u.gid); err != nil {
			return ids, err
		}
		usr, err := user.Lookup(u.name)
		if err != nil {
			return ids, err
		}
		if usr.Gid != strconv.Itoa(*u.gid) {
			return ids, fmt.Errorf("user %s exists with primary group %s, want %s (%d): fix or remove it", u.name, usr.Gid, u.name, *u.gid)
		}
		gids, err := usr.GroupIds()
		if err != nil {
			return ids, fmt.Errorf("groups of %s: %w", u.name, err)
		}
		in := slices.Contains(gids, strconv.Itoa(ids.gs))
		switch {
		case u.shared && !in:
			err = command("usermod", "-a", "-G", "asofshare", u.name)
		case !u.shared && in:
			err = command("gpasswd", "-d", u.name, "asofshare")
		}
		if err != nil {
			return ids, err
		}
	}
	return ids, nil
}

// ensureGroup returns the id of group name, adding it (with id want when free) if missing.
func ensureGroup(name string, want int) (int, error) {
	if g, err := user.LookupGroup(name); err == nil {
		return strconv.Atoi(g.Gid)
	}
	args := []string{name}
	if _, err := user.LookupGroupId(strconv.Itoa(want)); err != nil {
		args = append([]string{"-g", strconv.Itoa(want)}, args...)
	}
	addErr := command("groupadd", args...)
	g, err := user.LookupGroup(name) // another test process may have added it meanwhile
	if err != nil {
		return 0, fmt.Errorf("group %s: %v (%v)", name, err, addErr)
	}
	return strconv.Atoi(g.Gid)
}

// ensureUser returns the uid of user name, adding it (uid want when free, primary group
// gid, no home, no login) if missing.
func ensureUser(name string, want, gid int) (int, error) {
	if u, err := user.Lookup(name); err == nil {
		return strconv.Atoi(u.Uid)
	}
	args := []string{"-M", "-N", "-g", strconv.Itoa(gid), "-s", "/usr/sbin/nologin", "-c", "asof identity tests"}
	if _, err := user.LookupId(strconv.Itoa(want)); err != nil {
		args = append(args, "-u", strconv.Itoa(want))
	}
	addErr := command("useradd", append(args, name)...)
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("user %s: %v (%v)", name, err, addErr)
	}
	return strconv.Atoi(u.Uid)
}

func command(name string, args ...string) error {
	p, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(d, name)); serr == nil {
				p, err = filepath.Join(d, name), nil
				break
			}
		}
		if err != nil {
			return err
		}
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
