package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/asof/asof/fs"
)

// clearEnv hides any ASOF_* variables of the developer's shell, so that
// tests see only what they set (t.Setenv restores them afterwards).
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "ASOF_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, file string, flags *pflag.FlagSet) *Config {
	t.Helper()
	c, err := Load(file, flags)
	if err != nil {
		t.Fatalf("Load(%q): %v", file, err)
	}
	return c
}

// wantErr asserts that Load fails with a message containing every part.
func wantErr(t *testing.T, file string, flags *pflag.FlagSet, parts ...string) {
	t.Helper()
	_, err := Load(file, flags)
	if err == nil {
		t.Fatalf("Load(%q) succeeded, want error containing %q", file, parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q\ndoes not contain %q", err, p)
		}
	}
}

func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	set := pflag.NewFlagSet("asof", pflag.ContinueOnError)
	RegisterFlags(set)
	if err := set.Parse(args); err != nil {
		t.Fatal(err)
	}
	return set
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, e := range s {
		out = append(out, netip.MustParsePrefix(e))
	}
	return out
}

func TestDefaults(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, "", nil)
	if c.File != "" || c.Data != "./asof-data" ||
		c.NFS.Listen != "127.0.0.1:2049" || c.NineP.Listen != "127.0.0.1:5640" ||
		c.Control.Socket != "./asof-data/control.sock" ||
		c.Exports.ReadOnly ||
		c.Exports.Squash != fs.SquashRoot || c.Exports.AnonUID != 65534 || c.Exports.AnonGID != 65534 ||
		c.History.TimezoneName != "UTC" || c.History.Timezone != time.UTC ||
		c.History.FlushInterval != time.Second ||
		c.Retention != nil || c.Volumes != nil || c.VolumeCache != 1<<30 || c.Metrics.Listen != "" {
		t.Errorf("defaults:\n%s", c)
	}
	if !reflect.DeepEqual(c.Exports.Allow, prefixes("127.0.0.0/8", "::1/128")) {
		t.Errorf("allow = %v", c.Exports.Allow)
	}
	// Registered but unset flags must not override anything.
	if c2 := mustLoad(t, "", flags(t)); !reflect.DeepEqual(c, c2) {
		t.Errorf("unset flags changed the config:\n%s\nvs\n%s", c, c2)
	}
	if d := Default(); !reflect.DeepEqual(c, d) {
		t.Errorf("Default() differs from Load:\n%s\nvs\n%s", d, c)
	}
}

func TestDefaultIgnoresEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv("ASOF_DATA", "/elsewhere")
	t.Setenv("ASOF_BOGUS", "x")
	if d := Default(); d.Data != DefaultData {
		t.Errorf("Default().Data = %q", d.Data)
	}
}

func TestDerivedControlSocket(t *testing.T) {
	clearEnv(t)
	t.Setenv("ASOF_DATA", "/x")
	if c := mustLoad(t, "", nil); c.Control.Socket != "/x/control.sock" {
		t.Errorf("socket = %q, want /x/control.sock", c.Control.Socket)
	}
	// From the file too, and an explicit socket wins.
	f := writeFile(t, "a.yaml", "data: /srv/asof\n")
	if c := mustLoad(t, f, flags(t, "--data=/y")); c.Control.Socket != "/y/control.sock" {
		t.Errorf("socket = %q, want /y/control.sock", c.Control.Socket)
	}
	if c := mustLoad(t, "", flags(t, "--data=/z/")); c.Control.Socket != "/z/control.sock" {
		t.Errorf("socket = %q, want /z/control.sock", c.Control.Socket)
	}
	t.Setenv("ASOF_CONTROL_SOCKET", "/run/asof.sock")
	if c := mustLoad(t, f, nil); c.Control.Socket != "/run/asof.sock" {
		t.Errorf("socket = %q, want /run/asof.sock", c.Control.Socket)
	}
}

// The same settings in the three formats must give the same Config.
func TestFileFormats(t *testing.T) {
	clearEnv(t)
	yaml := `
data: /srv/asof
nfs:
  listen: 0.0.0.0:2049
ninep:
  listen: ""
control:
  socket: /run/asof.sock
exports:
  read_only: true
  allow: [10.0.0.0/8, 192.168.1.7, "fd00::/8"]
  squash: all
  anon_uid: 1000
  anon_gid: 100
history:
  timezone: Europe/Paris
  flush_interval: 250ms
retention:
  - {keep: 1m, for: 24h}
  - {keep: 1h, for: forever}
volumes:
  - name: disk1
    path: /mnt/disk1
  - {name: disk2, kind: dir, path: /mnt/disk2}
volume_cache: 512MiB
metrics:
  listen: 127.0.0.1:9090
`
	toml := `
data = "/srv/asof"
volume_cache = "512MiB"
[nfs]
listen = "0.0.0.0:2049"
[ninep]
listen = ""
[control]
socket = "/run/asof.sock"
[exports]
read_only = true
allow = ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]
squash = "all"
anon_uid = 1000
anon_gid = 100
[history]
timezone = "Europe/Paris"
flush_interval = "250ms"
[[retention]]
keep = "1m"
for = "24h"
[[retention]]
keep = "1h"
for = "forever"
[[volumes]]
name = "disk1"
path = "/mnt/disk1"
[[volumes]]
name = "disk2"
kind = "dir"
path = "/mnt/disk2"
[metrics]
listen = "127.0.0.1:9090"
`
	json := `{
  "data": "/srv/asof",
  "nfs": {"listen": "0.0.0.0:2049"},
  "ninep": {"listen": ""},
  "control": {"socket": "/run/asof.sock"},
  "exports": {"read_only": true, "allow": ["10.0.0.0/8", "192.168.1.7", "fd00::/8"], "squash": "all", "anon_uid": 1000, "anon_gid": 100},
  "history": {"timezone": "Europe/Paris", "flush_interval": "250ms"},
  "retention": [{"keep": "1m", "for": "24h"}, {"keep": "1h", "for": "forever"}],
  "volumes": [{"name": "disk1", "path": "/mnt/disk1"}, {"name": "disk2", "kind": "dir", "path": "/mnt/disk2"}],
  "volume_cache": 536870912,
  "metrics": {"listen": "127.0.0.1:9090"}
}`
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Data:    "/srv/asof",
		NFS:     NFS{Listen: "0.0.0.0:2049"},
		NineP:   NineP{Listen: ""},
		Control: Control{Socket: "/run/asof.sock"},
		Exports: Exports{ReadOnly: true, Allow: prefixes("10.0.0.0/8", "192.168.1.7/32", "fd00::/8"), Squash: fs.SquashAll, AnonUID: 1000, AnonGID: 100},
		History: History{Timezone: paris, TimezoneName: "Europe/Paris", FlushInterval: 250 * time.Millisecond},
		Retention: []Rule{
			{Keep: time.Minute, For: 24 * time.Hour},
			{Keep: time.Hour, Forever: true},
		},
		Volumes: []Volume{
			{Name: "disk1", Kind: "dir", Path: "/mnt/disk1"},
			{Name: "disk2", Kind: "dir", Path: "/mnt/disk2"},
		},
		VolumeCache: 512 << 20,
		Metrics:     Metrics{Listen: "127.0.0.1:9090"},
		Mirror:      Mirror{Allow: prefixes("10.0.0.0/8", "192.168.1.7/32", "fd00::/8"), TokenFile: "/srv/asof/mirror.token"},
	}
	for name, content := range map[string]string{"asof.yaml": yaml, "asof.yml": yaml, "asof": yaml, "asof.toml": toml, "asof.json": json} {
		t.Run(name, func(t *testing.T) {
			f := writeFile(t, name, content)
			c := mustLoad(t, f, nil)
			w := *want
			w.File = f
			if !reflect.DeepEqual(c, &w) {
				t.Errorf("got\n%s\nwant\n%s", c, &w)
			}
		})
	}
}

func TestUnsupportedFileType(t *testing.T) {
	clearEnv(t)
	wantErr(t, writeFile(t, "asof.ini", "data=x\n"), nil, "unknown file type", ".ini")
	wantErr(t, filepath.Join(t.TempDir(), "missing.yaml"), nil, "missing.yaml")
	wantErr(t, writeFile(t, "bad.yaml", "nfs: [\n"), nil, "not valid YAML")
	wantErr(t, writeFile(t, "bad.json", "{"), nil, "not valid JSON")
	wantErr(t, writeFile(t, "two.json", "{} {}"), nil, "more data after the top-level object")
	wantErr(t, writeFile(t, "bad.toml", "x = = 1"), nil, "not valid TOML")
}

func TestEmptyFileIsDefaults(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, writeFile(t, "empty.yaml", ""), nil)
	if c.NFS.Listen != DefaultNFSListen || c.Data != DefaultData {
		t.Errorf("empty file:\n%s", c)
	}
}

func TestConfigFileFromEnv(t *testing.T) {
	clearEnv(t)
	f := writeFile(t, "a.yaml", "data: /from/file\n")
	t.Setenv(EnvConfigFile, f)
	if c := mustLoad(t, "", nil); c.Data != "/from/file" || c.File != f {
		t.Errorf("data = %q, file = %q", c.Data, c.File)
	}
}

func TestPrecedence(t *testing.T) {
	clearEnv(t)
	f := writeFile(t, "a.yaml", `
nfs: {listen: "127.0.0.1:1111"}
ninep: {listen: "127.0.0.1:2222"}
history: {flush_interval: 2s}
exports: {allow: [10.0.0.0/8], read_only: true}
`)
	c := mustLoad(t, f, nil)
	if c.NFS.Listen != "127.0.0.1:1111" || c.History.FlushInterval != 2*time.Second || !c.Exports.ReadOnly {
		t.Fatalf("file not applied:\n%s", c)
	}

	// Environment overrides the file.
	t.Setenv("ASOF_NFS_LISTEN", "127.0.0.1:3333")
	t.Setenv("ASOF_HISTORY_FLUSH_INTERVAL", "3s")
	t.Setenv("ASOF_EXPORTS_ALLOW", "192.168.0.0/16, ::1")
	t.Setenv("ASOF_EXPORTS_READ_ONLY", "false")
	t.Setenv("ASOF_RETENTION", "1m for 1h, 1h for forever")
	c = mustLoad(t, f, nil)
	if c.NFS.Listen != "127.0.0.1:3333" || c.NineP.Listen != "127.0.0.1:2222" ||
		c.History.FlushInterval != 3*time.Second || c.Exports.ReadOnly ||
		!reflect.DeepEqual(c.Exports.Allow, prefixes("192.168.0.0/16", "::1/128")) ||
		!reflect.DeepEqual(c.Retention, []Rule{{Keep: time.Minute, For: time.Hour}, {Keep: time.Hour, Forever: true}}) {
		t.Fatalf("environment not applied:\n%s", c)
	}

	// Flags override the environment; only flags actually set count.
	c = mustLoad(t, f, flags(t, "--nfs-listen=127.0.0.1:4444", "--flush-interval=4s",
		"--allow=172.16.0.0/12", "--allow=::1", "--read-only", "--retention="))
	if c.NFS.Listen != "127.0.0.1:4444" || c.NineP.Listen != "127.0.0.1:2222" ||
		c.History.FlushInterval != 4*time.Second || !c.Exports.ReadOnly ||
		!reflect.DeepEqual(c.Exports.Allow, prefixes("172.16.0.0/12", "::1/128")) ||
		c.Retention != nil {
		t.Fatalf("flags not applied:\n%s", c)
	}
}

// Every flag of RegisterFlags reaches its key.
func TestAllFlags(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, "", flags(t,
		"--data=/d", "--nfs-listen=:1", "--ninep-listen=:2", "--control-socket=/c.sock",
		"--read-only=true", "--allow=10.1.0.0/16", "--squash=none", "--anon-uid=7", "--anon-gid=8",
		"--timezone=America/New_York", "--flush-interval=10ms",
		"--retention=keep 1h for 1d", "--metrics-listen=:3"))
	want := "data: \"/d\"\nnfs:\n  listen: \":1\"\nninep:\n  listen: \":2\"\ncontrol:\n  socket: \"/c.sock\"\n" +
		"exports:\n  read_only: true\n  allow: [\"10.1.0.0/16\"]\n  squash: \"none\"\n  anon_uid: 7\n  anon_gid: 8\n" +
		"history:\n  timezone: \"America/New_York\"\n  flush_interval: \"10ms\"\n" +
		"retention:\n  - {keep: \"1h\", for: \"1d\"}\nvolumes: []  # one volume inside data\nvolume_cache: \"1GiB\"\nmetrics:\n  listen: \":3\"\n" +
		"mirror:\n  listen: \"\"\n  allow: [\"10.1.0.0/16\"]\n  token_file: \"/d/mirror.token\"\n  source: \"\"\n  bwlimit: \"\"\n"
	if got := c.String(); !strings.HasSuffix(got, want) {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// An empty value from the environment is a value: it disables a listener.
func TestEmptyEnvDisables(t *testing.T) {
	clearEnv(t)
	t.Setenv("ASOF_NFS_LISTEN", "")
	c := mustLoad(t, "", nil)
	if c.NFS.Listen != "" || c.NineP.Listen != DefaultNinePListen {
		t.Errorf("nfs %q ninep %q", c.NFS.Listen, c.NineP.Listen)
	}
}

func TestUnknownKeys(t *testing.T) {
	clearEnv(t)
	cases := []struct{ file, content string }{
		{"top.yaml", "nfs_listen: x\n"},
		{"nested.yaml", "nfs:\n  lisen: 127.0.0.1:2049\n"},
		{"deep.yaml", "exports:\n  allow: []\n  squahs: all\n"},
		{"rule.yaml", "retention:\n  - {keep: 1m, for: 1h}\n  - {kep: 1h, for: forever}\n"},
		{"volume.yaml", "volumes:\n  - {name: a, path: /a, size: 10}\n"},
		{"s3.yaml", "volumes:\n  - {name: a, kind: s3, s3: {bucket: b, secret: x}}\n"},
		{"top.toml", "[histroy]\ntimezone = \"UTC\"\n"},
		{"nested.json", `{"metrics": {"address": ":9090"}}`},
	}
	wants := [][]string{
		{`unknown key "nfs_listen"`, "known keys: control, data, exports"},
		{`unknown key "nfs.lisen"`, `did you mean "nfs.listen"?`},
		{`unknown key "exports.squahs"`, `did you mean "exports.squash"?`},
		{`retention rule 2: unknown key "kep"`, `did you mean "keep"?`},
		{`volume 1: unknown key "size"`},
		{`volume 1: unknown key "s3.secret"`, "s3 takes: bucket, credentials_file"},
		{`unknown key "histroy"`, `did you mean "history"?`},
		{`unknown key "metrics.address"`, "metrics takes: listen"},
	}
	for i, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			f := writeFile(t, tc.file, tc.content)
			wantErr(t, f, nil, append([]string{"config: " + f + ": "}, wants[i]...)...)
		})
	}
}

// exports.uid and exports.gid meant "every caller acts as this": a file
// that still sets them is refused with what replaces them, not served
// with a meaning its author did not choose.
func TestRemovedExportsIDs(t *testing.T) {
	clearEnv(t)
	f := writeFile(t, "old.yaml", "exports:\n  uid: 1000\n  gid: 100\n")
	wantErr(t, f, nil,
		"config: "+f+": exports.uid is gone: callers now act as the uid, gid and groups their requests carry",
		"config: "+f+": exports.gid is gone",
		"exports.squash (root, none or all)", "exports.anon_uid and exports.anon_gid set that identity")
}

func TestKeyShapeErrors(t *testing.T) {
	clearEnv(t)
	wantErr(t, writeFile(t, "a.yaml", "nfs: 127.0.0.1:2049\n"), nil,
		`nfs is a section (with keys listen), not a value: got "127.0.0.1:2049"`)
	wantErr(t, writeFile(t, "b.yaml", "nfs:\n  listen:\n"), nil,
		"nfs.listen has no value", "remove the key to use the default")
	wantErr(t, writeFile(t, "c.yaml", "nfs: {listen: ':1', Listen: ':2'}\n"), nil,
		`key "nfs.listen" is given twice`)
}

func TestUnknownEnv(t *testing.T) {
	clearEnv(t)
	t.Setenv("ASOF_NFS_LISTN", "127.0.0.1:1")
	wantErr(t, "", nil, "environment variable ASOF_NFS_LISTN is not a setting; did you mean ASOF_NFS_LISTEN?")
	clearEnv(t)
	t.Setenv("ASOF_SOMETHING_ELSE", "1")
	wantErr(t, "", nil, "ASOF_SOMETHING_ELSE is not a setting (known: ASOF_DATA, ")
}

func TestBadValues(t *testing.T) {
	cases := []struct {
		env, value string
		want       string
	}{
		{"ASOF_HISTORY_FLUSH_INTERVAL", "abc",
			`config: history.flush_interval: "abc" is not a duration (use e.g. 500ms, 1s, 2m) [from ASOF_HISTORY_FLUSH_INTERVAL]`},
		{"ASOF_HISTORY_FLUSH_INTERVAL", "0s", `config: history.flush_interval: "0s" is out of range (use 1ms to 1h`},
		{"ASOF_HISTORY_FLUSH_INTERVAL", "2h", `config: history.flush_interval: "2h" is out of range (use 1ms to 1h`},
		{"ASOF_HISTORY_FLUSH_INTERVAL", "100us", `"100us" is out of range`},
		{"ASOF_HISTORY_TIMEZONE", "Mars/Olympus", `config: history.timezone: "Mars/Olympus" is not a known time zone (use an IANA name`},
		{"ASOF_NFS_LISTEN", "2049", `config: nfs.listen: "2049" is not host:port (use e.g. 127.0.0.1:2049, [::1]:2049 or :2049; empty disables NFS)`},
		{"ASOF_NINEP_LISTEN", "localhost:ninep", `config: ninep.listen: "localhost:ninep" is not host:port (use e.g. 127.0.0.1:5640`},
		{"ASOF_NINEP_LISTEN", "127.0.0.1:70000", `config: ninep.listen: "127.0.0.1:70000" is not host:port`},
		{"ASOF_METRICS_LISTEN", "::1:9090", `config: metrics.listen: "::1:9090" is not host:port (use e.g. 127.0.0.1:9090, [::1]:9090 or :9090; empty disables metrics)`},
		{"ASOF_METRICS_LISTEN", "127.0.0.1:2049", `config: metrics.listen: "127.0.0.1:2049" is also nfs.listen: each listener needs its own address`},
		{"ASOF_EXPORTS_READ_ONLY", "yes", `config: exports.read_only: "yes" is not a boolean (use true or false)`},
		{"ASOF_EXPORTS_ALLOW", "10.0.0.0/8,10.0.0/8", `config: exports.allow: entry 2 "10.0.0/8" is not a network (use CIDR such as 192.168.1.0/24 or fd00::/8, or a single address)`},
		{"ASOF_EXPORTS_ALLOW", "fe80::1%eth0", `entry 1 "fe80::1%eth0" is not a network`},
		{"ASOF_EXPORTS_ALLOW", "", `config: exports.allow: the list is empty, so no client could connect`},
		{"ASOF_EXPORTS_ANON_UID", "-1", `config: exports.anon_uid: "-1" is not a user id (use an integer from 0 to 4294967294)`},
		{"ASOF_EXPORTS_ANON_GID", "4294967295", `config: exports.anon_gid: "4294967295" is not a group id`},
		{"ASOF_EXPORTS_ANON_UID", "nobody", `config: exports.anon_uid: "nobody" is not a user id`},
		{"ASOF_EXPORTS_SQUASH", "root_squash", `config: exports.squash: "root_squash" is not a squash mode (use root: uid 0 acts as exports.anon_uid/anon_gid`},
		{"ASOF_EXPORTS_SQUASH", "", `config: exports.squash: "" is not a squash mode`},
		{"ASOF_EXPORTS_UID", "1000", `config: environment variable ASOF_EXPORTS_UID (exports.uid) is gone: callers now act as the uid, gid and groups their requests carry`},
		{"ASOF_EXPORTS_GID", "1000", `exports.anon_uid and exports.anon_gid set that identity`},
		{"ASOF_DATA", "", `config: data: "" is empty`},
		{"ASOF_CONTROL_SOCKET", "/" + strings.Repeat("s", 200), `config: control.socket: "/sss`},
		{"ASOF_DATA", "/" + strings.Repeat("d", 200), `unix socket paths are limited to`},
		{"ASOF_VOLUMES", "disk1=/mnt", `config: volumes: "disk1=/mnt": volumes can only be listed in the config file [from ASOF_VOLUMES]`},
		{"ASOF_RETENTION", "1m", `config: retention: rule 1 (1m): is not "GRAIN for AGE"`},
		{"ASOF_VOLUME_CACHE", "1GB", `config: volume_cache: "1GB" is not a size (use an integer and a binary unit: e.g. 512MiB, 1GiB, 20GiB) [from ASOF_VOLUME_CACHE]`},
		{"ASOF_VOLUME_CACHE", "1.5GiB", `config: volume_cache: "1.5GiB" is not a size`},
		{"ASOF_VOLUME_CACHE", "-1GiB", `config: volume_cache: "-1GiB" is not a size`},
		{"ASOF_VOLUME_CACHE", "", `config: volume_cache: "" is not a size`},
		{"ASOF_VOLUME_CACHE", "99999999TiB", `config: volume_cache: "99999999TiB" is not a size`},
		{"ASOF_VOLUME_CACHE", "64KiB", `config: volume_cache: "64KiB" is below 1MiB, the cache's piece: it could hold nothing (use e.g. 512MiB, 1GiB) [from ASOF_VOLUME_CACHE]`},
	}
	for _, tc := range cases {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.env, tc.value)
			wantErr(t, "", nil, tc.want)
		})
	}
}

func TestBothListenersEmpty(t *testing.T) {
	clearEnv(t)
	t.Setenv("ASOF_NFS_LISTEN", "")
	wantErr(t, "", flags(t, "--ninep-listen="), "nfs.listen and ninep.listen are both empty")
}

// Bad values in a file and from flags name their source; all problems come
// back together.
func TestBadValuesFromFileAndFlags(t *testing.T) {
	clearEnv(t)
	f := writeFile(t, "a.yaml", `
data: true
exports: {anon_uid: 1.5, anon_gid: -3, squash: 1, allow: [10.0.0.0/8, 7]}
history: {flush_interval: 1}
volume_cache: 1 gigabyte
`)
	wantErr(t, f, nil,
		"config: data: true is not a text value [from "+f+"]",
		"config: exports.anon_uid: 1.5 is not a user id",
		"config: exports.anon_gid: -3 is not a group id",
		`config: exports.squash: "1" is not a squash mode`,
		"config: exports.allow: entry 2 7 is not a network",
		`config: history.flush_interval: "1" is not a duration`,
		`config: volume_cache: "1 gigabyte" is not a size (use an integer and a binary unit: e.g. 512MiB, 1GiB, 20GiB) [from `+f+"]")
	wantErr(t, "", flags(t, "--flush-interval=soon"),
		`config: history.flush_interval: "soon" is not a duration (use e.g. 500ms, 1s, 2m) [from --flush-interval]`)
}

func TestVolumes(t *testing.T) {
	clearEnv(t)
	cases := map[string]string{
		"volumes: [{path: /a}]":                                      "config: volumes: volume 1: name is missing",
		"volumes: [{name: 'a b', path: /a}]":                         `volume 1 (a b): name "a b" is not allowed`,
		"volumes: [{name: a, path: /a}, {name: a, path: /b}]":        `volume 2 (a): name "a" is already volume 1's`,
		"volumes: [{name: a, path: /a}, {name: b, path: /a/}]":       `volume 2 (b): path "/a/" is already volume 1's`,
		"volumes: [{name: a}]":                                       "volume 1 (a): path is missing",
		"volumes: [{name: a, kind: nfs, path: /a}]":                  `volume 1 (a): kind "nfs" is not a volume kind (use dir or s3)`,
		"volumes: [{name: a, kind: s3, s3: {bucket: b}}]":            "volume 1 (a): kind s3 needs s3: {endpoint: URL, bucket: NAME}",
		"volumes: [{name: a, path: /a, s3: {bucket: b}}]":            "volume 1 (a): s3 settings are only for kind: s3",
		"volumes: {name: a}":                                         "config: volumes: a section is not a list of volumes",
		"volumes: [disk1]":                                           `volume 1 "disk1" is not a volume`,
		"retention: {keep: 1m}":                                      "config: retention: a section is not a list of rules",
		"retention: [{keep: [1m], for: 1h}]":                         "config: retention: rule 1: keep a list [1m] is not a duration",
		"retention: ['1m for 1h', '1h until 2h']":                    `rule 2 (1h until 2h): is not "GRAIN for AGE"`,
		"retention: [{keep: 1m, for: 1h}, {keep: 1h, for: forever}]": "",
	}
	for content, want := range cases {
		t.Run(content, func(t *testing.T) {
			f := writeFile(t, "a.yaml", content+"\n")
			if want == "" {
				mustLoad(t, f, nil)
				return
			}
			wantErr(t, f, nil, want)
		})
	}
}

func TestRetentionValid(t *testing.T) {
	rules, err := ParseRetention("30s for 1h, 1m for 24h, 1h for 7d, 1d for 30d, 1w for forever")
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{Keep: 30 * time.Second, For: time.Hour},
		{Keep: time.Minute, For: 24 * time.Hour},
		{Keep: time.Hour, For: 7 * Day},
		{Keep: Day, For: 30 * Day},
		{Keep: Week, Forever: true},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Fatalf("got %v", rules)
	}
	var texts []string
	for _, r := range rules {
		texts = append(texts, r.String())
	}
	if got := strings.Join(texts, ", "); got != "30s for 1h, 1m for 1d, 1h for 1w, 1d for 4w2d, 1w for forever" {
		t.Errorf("String: %s", got)
	}

	for _, s := range []string{
		"",                              // keep everything
		"1h for forever",                // one coarse grain for all time
		"keep 1m for 1h",                // optional "keep"
		"1m for 1h, 1m for 2h",          // the same grain twice is a multiple
		"1h for 90m",                    // a grain need not divide its window
		"1m for 1h, 1h for 2h",          // grain exactly as long as its window
		"36h for 1w, 1w12h for forever", // mixed units
	} {
		if _, err := ParseRetention(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}

	// The same list from a file.
	clearEnv(t)
	c := mustLoad(t, writeFile(t, "r.yaml", `
retention:
  - {keep: 30s, for: 1h}
  - {keep: 1m, for: 24h}
  - {keep: 1h, for: 7d}
  - {keep: 1d, for: 30d}
  - {keep: 1w, for: forever}
`), nil)
	if !reflect.DeepEqual(c.Retention, want) {
		t.Errorf("from file: %v", c.Retention)
	}
}

func TestRetentionInvalid(t *testing.T) {
	cases := map[string]string{
		"0s for 1h":                    "rule 1 (0s for 1h): keep must be a positive duration, got 0s",
		"-1m for 1h":                   "rule 1 (-1m for 1h): keep must be a positive duration",
		"1m for 0s":                    "rule 1 (1m for 0s): for must be a positive duration",
		"1m for -1h":                   "rule 1 (1m for -1h): for must be a positive duration",
		"abc for 1h":                   `rule 1 (abc for 1h): keep "abc" is not a duration (use e.g. 30s, 1m, 1h, 1d, 1w)`,
		"1m for soon":                  `rule 1 (1m for soon): for "soon" is not a duration or forever`,
		"forever for forever":          `keep "forever" is not a duration`,
		"1m for 24h, 1h for 12h":       "rule 2 (1h for 12h): for 12h must be longer than rule 1's 1d",
		"1m for 24h, 1h for 24h":       "rule 2 (1h for 24h): for 1d must be longer than rule 1's 1d",
		"1m for 1h, 90s for 24h":       "rule 2 (90s for 24h): grain 1m30s is not a whole multiple of rule 1's grain 1m",
		"1h for 1h, 1m for 24h":        "rule 2 (1m for 24h): grain 1m is not a whole multiple of rule 1's grain 1h",
		"1h for 30m":                   "rule 1 (1h for 30m): grain 1h is longer than its window (0s to 30m, 30m long)",
		"1d for 7d, 1w for 8d":         "rule 2 (1w for 8d): grain 1w is longer than its window (1w to 1w1d, 1d long)",
		"1m for forever, 1h for 1w":    "rule 1 (1m for forever): for: forever must be the last rule",
		"1m for 1h, 1h":                `rule 2 (1h): is not "GRAIN for AGE"`,
		"1m for 1h, 1h for forever, x": `rule 3 (x): is not "GRAIN for AGE"`,
	}
	for s, want := range cases {
		t.Run(s, func(t *testing.T) {
			_, err := ParseRetention(s)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("ParseRetention(%q) = %v, want error containing %q", s, err, want)
			}
		})
	}

	// From a file, a missing field and the key prefix.
	clearEnv(t)
	wantErr(t, writeFile(t, "a.yaml", "retention:\n  - {keep: 1m}\n"), nil,
		"config: retention: rule 1 (keep: 1m): for is missing")
	wantErr(t, writeFile(t, "b.yaml", "retention:\n  - {for: 1h}\n"), nil,
		"config: retention: rule 1 (for: 1h): keep is missing")
	wantErr(t, writeFile(t, "c.yaml", "retention:\n  - {keep: 30, for: 1h}\n"), nil,
		`config: retention: rule 1 (30 for 1h): keep "30" is not a duration`)
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"30s": 30 * time.Second, "1m": time.Minute, "1h": time.Hour, "36h": 36 * time.Hour,
		"1d": Day, "1w": Week, "1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour, ".5w": 84 * time.Hour,
		"2w3d": 17 * Day, "-1d": -Day, "+1d": Day, "500ms": 500 * time.Millisecond,
		"1d500ms": Day + 500*time.Millisecond, "0": 0, " 1w ": Week, "1µs": time.Microsecond,
	}
	for s, want := range good {
		if got, err := ParseDuration(s); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "d", "1", "1x", "1dd", "1d 2h", "d1", "1d-2h", "..5d", "-", "100000000w", "abc", "1e3d"} {
		if got, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want error", s, got)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", Week: "1w", 36 * time.Hour: "1d12h", 90 * time.Minute: "1h30m",
		500 * time.Millisecond: "500ms", 1500 * time.Millisecond: "1.5s", -Day: "-1d",
		Week + Day + time.Hour + time.Minute + time.Second: "1w1d1h1m1s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := ParseDuration(FormatDuration(d)); err != nil || back != d {
			t.Errorf("round trip of %v: %v, %v", d, back, err)
		}
	}
}

func TestAllows(t *testing.T) {
	e := Exports{Allow: prefixes("127.0.0.0/8", "::1/128", "fe80::/10")}
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "::ffff:127.0.0.5": true, "::1": true, "fe80::1%eth0": true,
		"10.0.0.1": false, "::2": false,
	} {
		if got := e.Allows(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allows(%s) = %v", addr, got)
		}
	}
}

// The printed configuration is a config file that loads back the same.
func TestStringRoundTrip(t *testing.T) {
	clearEnv(t)
	src := writeFile(t, "a.yaml", `
data: "/srv/a \"quoted\" dir"
ninep: {listen: ""}
exports: {read_only: true, allow: [10.0.0.0/8, "::1"], squash: none, anon_uid: 0, anon_gid: 0}
history: {timezone: Asia/Tokyo, flush_interval: 1500ms}
retention: [{keep: 1m, for: 36h}, {keep: 1h, for: forever}]
volumes: [{name: disk1, path: /mnt/disk1}]
volume_cache: 20gib
metrics: {listen: ":9090"}
`)
	a := mustLoad(t, src, nil)
	if a.VolumeCache != 20<<30 {
		t.Errorf("volume_cache 20gib is %d bytes", a.VolumeCache)
	}
	dump := writeFile(t, "dump.yaml", a.String())
	b := mustLoad(t, dump, nil)
	b.File = a.File
	if !reflect.DeepEqual(a, b) {
		t.Errorf("round trip differs:\n%s\nvs\n%s", a, b)
	}
}

func exampleFile(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../asof.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestExampleFileLoads(t *testing.T) {
	clearEnv(t)
	c := mustLoad(t, "../asof.example.yaml", nil)
	d := Default()
	d.File = c.File
	if !reflect.DeepEqual(c, d) {
		t.Errorf("the example is documented as the defaults but differs:\n%s\nvs\n%s", c, d)
	}
	// Every key appears in the example, set or commented out.
	text := exampleFile(t)
	for _, k := range append(append([]string{}, fileKeys...), "s3.endpoint", "s3.bucket", "s3.prefix",
		"s3.region", "s3.credentials_file", "s3.profile", "keep", "for", "name", "kind", "path") {
		last := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(text, last+":") {
			t.Errorf("example lacks key %s", k)
		}
	}
}

// The commented-out retention example in asof.example.yaml is valid once
// uncommented.
func TestExampleRetentionLoads(t *testing.T) {
	clearEnv(t)
	var out []string
	in := false
	for _, line := range strings.Split(exampleFile(t), "\n") {
		switch {
		case line == "retention: []":
			continue
		case line == "# retention:":
			in = true
			out = append(out, "retention:")
			continue
		case in && strings.HasPrefix(line, "#   "):
			out = append(out, line[2:])
			continue
		}
		in = false
		out = append(out, line)
	}
	c := mustLoad(t, writeFile(t, "ex.yaml", strings.Join(out, "\n")), nil)
	if len(c.Retention) != 5 || !c.Retention[4].Forever {
		t.Errorf("example retention = %v", c.Retention)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "1B": 1, "512KiB": 512 << 10, "1MiB": 1 << 20, "1GiB": 1 << 30,
		"20 GiB": 20 << 30, "3tib": 3 << 40, " 7MiB ": 7 << 20, "8388607TiB": 8388607 << 40,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
		if want > 0 {
			if back, err := ParseSize(FormatSize(want)); err != nil || back != want {
				t.Errorf("FormatSize(%d) = %q, which reads back as %d, %v", want, FormatSize(want), back, err)
			}
		}
	}
	for _, in := range []string{"", "GiB", "1G", "1GB", "1 gigabyte", "0x10MiB", "-1", "1.5MiB", "8388608TiB", "1MiBB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
	if got := FormatSize(1536 << 20); got != "1536MiB" {
		t.Errorf("FormatSize(1.5 GiB) = %q", got)
	}
}
