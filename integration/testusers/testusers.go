// Package testusers gives end-to-end tests users and groups of their own in this
// machine's user database, which is the database of an asof server the tests run here:
// 9P takes a caller's groups from it, as diod does, so a test of 9P's group rules needs
// users the server knows.
//
//	asoftest1  group asoftest1, also in asofshare
//	asoftest2  group asoftest2, also in asofshare
//	asoftest3  group asoftest3, in no other group
//
// Ensure adds what is missing (useradd, groupadd: root only) with the ids 41001-41003 and
// 41010 when those are free, and leaves them in place, so it can run any number of times,
// from several test processes at once.
package testusers

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// IDs are the numeric ids of the test users and groups.
type IDs struct {
	U1, G1 int // asoftest1 and its group
	U2, G2 int // asoftest2 and its group
	U3, G3 int // asoftest3 and its group
	Shared int // asofshare: asoftest1 and asoftest2 are in it, asoftest3 is not
}

// Names of the users and the shared group.
const (
	User1, User2, User3 = "asoftest1", "asoftest2", "asoftest3"
	SharedGroup         = "asofshare"
)

var (
	once sync.Once
	ids  IDs
	err  error
)

// Ensure makes sure the users and groups exist as described above and returns their ids.
// Without root it can only find them: the error then says so, for a test to skip with.
func Ensure() (IDs, error) {
	once.Do(func() { ids, err = ensure() })
	return ids, err
}

func ensure() (IDs, error) {
	var ids IDs
	var err error
	if ids.Shared, err = ensureGroup(SharedGroup, 41010); err != nil {
		return ids, err
	}
	users := []struct {
		name     string
		id       int
		shared   bool
		uid, gid *int
	}{
		{User1, 41001, true, &ids.U1, &ids.G1},
		{User2, 41002, true, &ids.U2, &ids.G2},
		{User3, 41003, false, &ids.U3, &ids.G3},
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
			return ids, fmt.Errorf("testusers: user %s exists with primary group %s, want %s (%d): fix or remove it",
				u.name, usr.Gid, u.name, *u.gid)
		}
		gids, err := usr.GroupIds()
		if err != nil {
			return ids, fmt.Errorf("testusers: groups of %s: %w", u.name, err)
		}
		in := slices.Contains(gids, strconv.Itoa(ids.Shared))
		switch {
		case u.shared && !in:
			err = command("usermod", "-a", "-G", SharedGroup, u.name)
		case !u.shared && in:
			err = command("gpasswd", "-d", u.name, SharedGroup)
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
		return 0, fmt.Errorf("testusers: group %s: %v (%v)", name, err, addErr)
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
		return 0, fmt.Errorf("testusers: user %s: %v (%v)", name, err, addErr)
	}
	return strconv.Atoi(u.Uid)
}

func command(name string, args ...string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("testusers: %s %s: not root", name, strings.Join(args, " "))
	}
	p, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(d, name)); serr == nil {
				p, err = filepath.Join(d, name), nil
				break
			}
		}
		if err != nil {
			return errors.New("testusers: " + err.Error())
		}
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testusers: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
