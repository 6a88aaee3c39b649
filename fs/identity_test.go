package fs

import (
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/asof/asof/history"
)

func TestCallerAppliesSquash(t *testing.T) {
	s, err := history.Open(t.TempDir(), history.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	anon := &Cred{Uid: 4000, Gid: 4001}
	for _, c := range []struct {
		squash   Squash
		uid, gid uint32
		groups   []uint32
		want     Cred
	}{
		{SquashRoot, 1000, 100, []uint32{10, 20}, Cred{Uid: 1000, Gid: 100, Groups: []uint32{10, 20}}},
		{SquashRoot, 0, 0, []uint32{0, 5}, Cred{Uid: 4000, Gid: 4001, Groups: []uint32{4001, 5}}},
		{SquashRoot, 1000, 0, nil, Cred{Uid: 1000, Gid: 4001}},
		{SquashRoot, 0, 100, nil, Cred{Uid: 4000, Gid: 100}},
		{SquashNone, 0, 0, []uint32{0}, Cred{Uid: 0, Gid: 0, Groups: []uint32{0}}},
		{SquashAll, 1000, 100, []uint32{10}, Cred{Uid: 4000, Gid: 4001}},
	} {
		f := New(s, Options{Squash: c.squash, Anon: anon})
		got := f.Caller(c.uid, c.gid, c.groups)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("squash %s: Caller(%d, %d, %v) = %+v, want %+v", c.squash, c.uid, c.gid, c.groups, got, c.want)
		}
	}
	if a := New(s, Options{}).Anonymous(); a.Uid != AnonID || a.Gid != AnonID {
		t.Errorf("default anonymous identity %+v, want %d:%d", a, AnonID, AnonID)
	}
}

func TestParseSquash(t *testing.T) {
	for in, want := range map[string]Squash{"root": SquashRoot, "none": SquashNone, "all": SquashAll} {
		if got, err := ParseSquash(in); err != nil || got != want || got.String() != in {
			t.Errorf("ParseSquash(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseSquash("no_root_squash"); err == nil {
		t.Error("ParseSquash accepted no_root_squash")
	}
}

// LocalUser takes the primary and supplementary groups from the server's
// user database, as diod does for a 9P attach.
func TestLocalUserGroupsFromUserDatabase(t *testing.T) {
	s, err := history.Open(t.TempDir(), history.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := New(s, Options{Squash: SquashNone})
	me := f.LocalUser(uint32(os.Getuid()))
	if me.Uid != uint32(os.Getuid()) || me.Gid != uint32(os.Getgid()) {
		t.Errorf("LocalUser(%d) = %+v, want gid %d", os.Getuid(), me, os.Getgid())
	}
	byName, ok := f.LocalUserByName("root")
	if !ok || byName.Uid != 0 || byName.Gid != 0 {
		t.Errorf("LocalUserByName(root) = %+v, %v", byName, ok)
	}
	if _, ok := f.LocalUserByName("no-such-user-asof"); ok {
		t.Error("LocalUserByName found a user that does not exist")
	}
	// A uid the database does not know has only its own number as group.
	if u := f.LocalUser(3999999); u.Gid != 3999999 || len(u.Groups) != 0 {
		t.Errorf("unknown uid: %+v", u)
	}
}
