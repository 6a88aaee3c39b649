package clients

import (
	"reflect"
	"testing"
)

func TestNFSURL(t *testing.T) {
	c := NFS{Addr: "127.0.0.1:2049"}
	for _, tc := range []struct{ got, want string }{
		{c.DirURL("/"), "nfs://127.0.0.1/?version=3&nfsport=2049&mountport=2049&auto-traverse-mounts=0"},
		{c.DirURL("sub/"), "nfs://127.0.0.1/sub?version=3&nfsport=2049&mountport=2049&auto-traverse-mounts=0"},
		// a file at the root of export "/" needs two slashes: libnfs splits at the last one
		{c.FileURL("/a.txt"), "nfs://127.0.0.1//a.txt?version=3&nfsport=2049&mountport=2049&auto-traverse-mounts=0"},
		{c.FileURL("a.txt"), "nfs://127.0.0.1//a.txt?version=3&nfsport=2049&mountport=2049&auto-traverse-mounts=0"},
		{c.FileURL("/sub/b.txt"), "nfs://127.0.0.1/sub/b.txt?version=3&nfsport=2049&mountport=2049&auto-traverse-mounts=0"},
		{NFSURL("[::1]:3049", "//x", true), "nfs://[::1]//x?version=3&nfsport=3049&mountport=3049"},
		{NFS{Addr: "h:1", As: &ID{1000, 100}}.FileURL("/f"), "nfs://h//f?version=3&nfsport=1&mountport=1&auto-traverse-mounts=0&uid=1000&gid=100"},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}

func TestParseNFSLs(t *testing.T) {
	out := "drwxr-xr-x  2     0     0         4096 sub\n" +
		"-rw-r--r--  1  1000   100            5 sub/b.txt\n" +
		"lrwxrwxrwx  1     0     0            5 with space\n"
	got, err := ParseNFSLs(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Mode: "drwxr-xr-x", Links: 2, Size: 4096, Name: "sub"},
		{Mode: "-rw-r--r--", Links: 1, UID: 1000, GID: 100, Size: 5, Name: "sub/b.txt"},
		{Mode: "lrwxrwxrwx", Links: 1, Size: 5, Name: "with space"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if !got[0].IsDir() || got[1].IsDir() {
		t.Error("IsDir")
	}
	if _, err := ParseNFSLs("garbage\n"); err == nil {
		t.Error("garbage parsed")
	}
}
