package config

import (
	"reflect"
	"testing"
)

func TestMirrorDefaults(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, writeFile(t, "a.yaml", "data: /srv/a\nexports:\n  allow: [10.0.0.0/8]\n"), nil)
	want := Mirror{Allow: prefixes("10.0.0.0/8"), TokenFile: "/srv/a/mirror.token"}
	if !reflect.DeepEqual(c.Mirror, want) {
		t.Fatalf("mirror %+v, want %+v", c.Mirror, want)
	}
	if c.Mirror.Allows(prefixes("10.1.2.3/32")[0].Addr()) == false || c.Mirror.Allows(prefixes("11.1.2.3/32")[0].Addr()) {
		t.Fatal("mirror.allow does not follow exports.allow")
	}
}

func TestMirrorKeys(t *testing.T) {
	clearEnv(t)
	f := writeFile(t, "a.yaml", `
mirror:
  listen: 0.0.0.0:5641
  allow: [192.168.0.0/16]
  token_file: /etc/asof/token
  source: backup.example.org:5641
  bwlimit: 10MiB/s
`)
	c := mustLoad(t, f, nil)
	want := Mirror{Listen: "0.0.0.0:5641", Allow: prefixes("192.168.0.0/16"), TokenFile: "/etc/asof/token", Source: "backup.example.org:5641",
		BWLimit: 10 << 20}
	if !reflect.DeepEqual(c.Mirror, want) {
		t.Fatalf("mirror %+v, want %+v", c.Mirror, want)
	}
	// The dump loads back to the same configuration.
	again := mustLoad(t, writeFile(t, "b.yaml", c.String()), nil)
	if !reflect.DeepEqual(again.Mirror, c.Mirror) {
		t.Fatalf("dumped and loaded: %+v, want %+v", again.Mirror, c.Mirror)
	}
	t.Setenv("ASOF_MIRROR_SOURCE", "10.0.0.1:5641")
	if c := mustLoad(t, "", nil); c.Mirror.Source != "10.0.0.1:5641" {
		t.Fatalf("ASOF_MIRROR_SOURCE: %q", c.Mirror.Source)
	}
}

func TestMirrorBadValues(t *testing.T) {
	clearEnv(t)
	wantErr(t, writeFile(t, "a.yaml", "mirror:\n  source: backup.example.org\n"), nil, "mirror.source", "is not host:port")
	wantErr(t, writeFile(t, "a.yaml", "mirror:\n  listen: 5641\n"), nil, "mirror.listen", "is not host:port")
	wantErr(t, writeFile(t, "a.yaml", "nfs:\n  listen: 127.0.0.1:2049\nmirror:\n  listen: 127.0.0.1:2049\n"), nil, "mirror.listen", "is also nfs.listen")
	wantErr(t, writeFile(t, "a.yaml", "mirror:\n  allow: [nonsense]\n"), nil, "mirror.allow", "is not a network")
	wantErr(t, writeFile(t, "a.yaml", "mirror:\n  bwlimit: fast\n"), nil, "mirror.bwlimit", `"fast" is not a rate`)
	wantErr(t, writeFile(t, "a.yaml", "mirror:\n  bwlimit: 100\n"), nil, "mirror.bwlimit", "below the least rate")
	wantErr(t, writeFile(t, "a.yaml", "mirror:\n  sorce: a:1\n"), nil, `unknown key "mirror.sorce"`, `did you mean "mirror.source"`)
}

func TestParseBandwidth(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "10MiB": 10 << 20, "10 MiB/s": 10 << 20, "512kib/s": 512 << 10, "1GiB/s": 1 << 30, "65536": 65536} {
		if got, err := ParseBandwidth(in); err != nil || got != want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "-1MiB", "10MiB/h", "1KiB", "500KB"} {
		if _, err := ParseBandwidth(in); err == nil {
			t.Errorf("ParseBandwidth(%q) accepted", in)
		}
	}
}
