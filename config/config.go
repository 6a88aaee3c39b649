// Package config loads asof's configuration (docs/SPEC.md section 2): defaults,
// then one config file (YAML; TOML and JSON by extension), then ASOF_*
// environment variables, then command-line flags, each layer overriding the
// one before. Unknown keys and invalid values stop start-up with a message
// naming the key, the value and what is allowed; Load reports every problem
// at once, so a broken file is fixed in one round.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	// A time zone that validates on one machine must validate on every
	// machine: minimal Debian images and containers often lack
	// /usr/share/zoneinfo, so embed the database (about 450 KB) as fallback.
	_ "time/tzdata"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/asof/asof/fs"
)

// Config is the effective configuration, every value parsed and checked.
type Config struct {
	// File is the config file that was read, "" if none.
	File string

	// Data is the directory where the embedded engine keeps everything.
	Data string

	NFS     NFS
	NineP   NineP
	Control Control
	Exports Exports
	History History

	// Retention is the pruning policy, rules in window order (docs/SPEC.md
	// section 5). Empty means keep all history forever.
	Retention []Rule

	// Volumes are where data blocks live besides Data (docs/SPEC.md
	// section 7); server.Start adds those the store does not have yet.
	Volumes []Volume
	// VolumeCache bounds the local cache of object-store volumes' packs,
	// in bytes (<Data>/cache).
	VolumeCache int64

	Metrics Metrics
	Mirror  Mirror
}

// NFS configures the NFSv3 listener.
type NFS struct {
	Listen string // host:port; "" disables NFS
}

// NineP configures the 9P2000.L listener.
type NineP struct {
	Listen string // host:port; "" disables 9P
}

// Control configures the admin API.
type Control struct {
	// Socket is the unix socket path (mode 0600). Never empty after Load:
	// when not set it is <Data>/control.sock.
	Socket string
}

// Exports says who may connect and who they act as.
type Exports struct {
	ReadOnly bool           // refuse every change over NFS and 9P
	Allow    []netip.Prefix // client networks allowed to connect; never empty
	// Squash is whose identity a caller acts as: root squashes uid 0 to
	// Anon, none squashes no one, all squashes everyone (knfsd's
	// root_squash, no_root_squash, all_squash).
	Squash fs.Squash
	// AnonUID and AnonGID are the anonymous identity: squashed callers,
	// and NFS calls with no credential (AUTH_NONE).
	AnonUID, AnonGID uint32
}

// Allows reports whether a client at addr may connect. IPv4 clients seen
// through an IPv6 socket (::ffff:a.b.c.d) match IPv4 networks, and a zone
// (fe80::1%eth0) does not prevent a match.
func (e Exports) Allows(addr netip.Addr) bool {
	addr = addr.WithZone("")
	for _, p := range e.Allow {
		if p.Contains(addr) || p.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}

// History configures transactions and the @@ syntax.
type History struct {
	// Timezone is the zone for @@ dates without an offset; TimezoneName is
	// its name as configured ("UTC", "Europe/Paris", "Local").
	Timezone     *time.Location
	TimezoneName string
	// FlushInterval is how often buffered changes commit as one
	// transaction: the finest grain of history. Between 1ms and 1h.
	FlushInterval time.Duration
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string // host:port serving /metrics; "" disables it
}

// Volume is one place where data blocks live.
type Volume struct {
	Name string // unique, letters, digits, '.', '_', '-'
	Kind string // "dir" (the default) or "s3"
	Path string // the directory, for kind dir
	// S3 holds the bucket settings for kind s3.
	S3 S3
}

// S3 describes an S3-compatible bucket. Secrets are never written in the
// config file: they come from the server's AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, or from CredentialsFile.
type S3 struct {
	Endpoint        string // e.g. https://s3.eu-west-1.amazonaws.com
	Bucket          string
	Prefix          string // key prefix inside the bucket
	Region          string
	CredentialsFile string // an AWS shared credentials file
	Profile         string // its profile ("" is default)
}

// Defaults (docs/SPEC.md section 2). control.socket has a derived
// default, computed in Load.
const (
	DefaultData          = "./asof-data"
	DefaultNFSListen     = "127.0.0.1:2049"
	DefaultNinePListen   = "127.0.0.1:5640"
	DefaultTimezone      = "UTC"
	DefaultFlushInterval = time.Second
	DefaultSquash        = "root"
	DefaultAnonID        = fs.AnonID // nobody and nogroup
	controlSocketName    = "control.sock"
)

// DefaultAllow is the default exports.allow: loopback only.
var DefaultAllow = []string{"127.0.0.0/8", "::1/128"}

// Limits of history.flush_interval: below 1ms a transaction per flush
// would be mostly overhead; above 1h unsynced changes would wait too long
// and history would be too coarse to be useful.
const (
	minFlushInterval = time.Millisecond
	maxFlushInterval = time.Hour
)

// flagDef maps a command-line flag to its key.
type flagDef struct {
	name, key, usage string
}

var flagDefs = []flagDef{
	{"data", "data", "directory where the engine keeps everything"},
	{"nfs-listen", "nfs.listen", `NFSv3 address host:port; "" disables NFS`},
	{"ninep-listen", "ninep.listen", `9P2000.L address host:port; "" disables 9P`},
	{"control-socket", "control.socket", "admin API unix socket (default <data>/control.sock)"},
	{"read-only", "exports.read_only", "refuse every change over NFS and 9P"},
	{"allow", "exports.allow", "client networks allowed to connect (CIDR, comma-separated or repeated)"},
	{"squash", "exports.squash", "whose identity callers act as: root (uid 0 acts as anon), none, or all (everyone acts as anon)"},
	{"anon-uid", "exports.anon_uid", "user id of the anonymous identity: squashed callers and NFS AUTH_NONE"},
	{"anon-gid", "exports.anon_gid", "group id of the anonymous identity"},
	{"timezone", "history.timezone", "zone for @@ dates without an offset"},
	{"flush-interval", "history.flush_interval", "how often buffered changes commit: the finest grain of history"},
	{"retention", "retention", `retention rules, e.g. "1m for 24h, 1h for 7d, 1d for forever" (default: keep everything)`},
	{"metrics-listen", "metrics.listen", `Prometheus /metrics address host:port (default "": disabled)`},
}

// RegisterFlags defines on flags one flag per main key: --data,
// --nfs-listen, --ninep-listen, --control-socket, --read-only, --allow,
// --squash, --anon-uid, --anon-gid, --timezone, --flush-interval, --retention,
// --metrics-listen. Pass the same flags to Load. Only flags the user actually
// sets override the file and environment, so the defaults shown in --help
// are documentation only. Values are taken as text and checked by Load, so
// a bad flag gets the same message as a bad file value. It panics, as
// pflag does, if flags already has one of these flags.
func RegisterFlags(flags *pflag.FlagSet) {
	for _, d := range flagDefs {
		switch d.key {
		case "exports.read_only":
			flags.Bool(d.name, false, d.usage)
		case "exports.allow":
			flags.StringSlice(d.name, slices.Clone(DefaultAllow), d.usage)
		case "data":
			flags.String(d.name, DefaultData, d.usage)
		case "nflags.listen":
			flags.String(d.name, DefaultNFSListen, d.usage)
		case "ninep.listen":
			flags.String(d.name, DefaultNinePListen, d.usage)
		case "history.timezone":
			flags.String(d.name, DefaultTimezone, d.usage)
		case "exports.squash":
			flags.String(d.name, DefaultSquash, d.usage)
		case "exports.anon_uid", "exports.anon_gid":
			flags.String(d.name, strconv.Itoa(DefaultAnonID), d.usage)
		case "history.flush_interval":
			flags.String(d.name, DefaultFlushInterval.String(), d.usage)
		default:
			flags.String(d.name, "", d.usage)
		}
	}
}

// Load returns the effective configuration: defaults, overridden by file
// (if not ""; else the file named by $ASOF_CONFIG, if set), overridden by
// ASOF_<KEY> environment variables (dots as underscores:
// ASOF_NFS_LISTEN, ASOF_EXPORTS_ALLOW="10.0.0.0/8,::1"), overridden by the
// flags of RegisterFlags that were set on flags (which may be nil).
//
// It fails, listing every problem, on an unreadable file, an unknown key
// in the file, an ASOF_* variable that is not a setting, or an invalid
// value.
func Load(file string, flags *pflag.FlagSet) (*Config, error) {
	if file == "" {
		file = os.Getenv(EnvConfigFile)
	}
	return load(file, flags, true)
}

// Default returns the configuration with every key at its default,
// ignoring the environment: for tests and tools that need a valid Config.
func Default() *Config {
	c, err := load("", nil, false)
	if err != nil {
		panic("config: defaults do not validate: " + err.Error())
	}
	return c
}

// loader carries one Load: the layered values and the problems found.
type loader struct {
	v      *viper.Viper
	file   string
	raw    map[string]any    // the file as parsed; nil without a file
	flagOf map[string]string // key -> name of the flag that set it
	useEnv bool
	errs   []error
}

func load(file string, flags *pflag.FlagSet, useEnv bool) (*Config, error) {
	l := &loader{v: viper.New(), file: file, flagOf: map[string]string{}, useEnv: useEnv}

	// Names first: a misspelt key makes every value check below moot.
	var errs []error
	if useEnv {
		errs = append(errs, checkEnv(os.Environ())...)
	}
	if file != "" {
		raw, err := readFile(file)
		if err != nil {
			return nil, err
		}
		errs = append(errs, checkFileKeys(file, raw)...)
		l.raw = raw
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	v := l.v
	v.SetDefault("data", DefaultData)
	v.SetDefault("nfs.listen", DefaultNFSListen)
	v.SetDefault("ninep.listen", DefaultNinePListen)
	v.SetDefault("control.socket", "") // derived from data below
	v.SetDefault("exports.read_only", false)
	v.SetDefault("exports.allow", slices.Clone(DefaultAllow))
	v.SetDefault("exports.squash", DefaultSquash)
	v.SetDefault("exports.anon_uid", DefaultAnonID)
	v.SetDefault("exports.anon_gid", DefaultAnonID)
	v.SetDefault("history.timezone", DefaultTimezone)
	v.SetDefault("history.flush_interval", DefaultFlushInterval.String())
	v.SetDefault("volume_cache", FormatSize(DefaultVolumeCache))
	v.SetDefault("metrics.listen", "")
	mirrorDefaults(v)
	if l.raw != nil {
		// MergeConfigMap lower-cases the keys in place, as viper matches
		// keys case-insensitively; l.raw stays usable for lookups.
		if err := v.MergeConfigMap(l.raw); err != nil {
			return nil, fmt.Errorf("config: %s: %w", file, err)
		}
	}
	if useEnv {
		v.SetEnvPrefix("ASOF")
		v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
		// ASOF_NFS_LISTEN= (empty) must disable NFS as the spec says;
		// by default viper treats an empty variable as unset.
		v.AllowEmptyEnv(true)
		v.AutomaticEnv()
	}
	if flags != nil {
		for _, d := range flagDefs {
			f := flags.Lookup(d.name)
			if f == nil || !f.Changed {
				continue
			}
			if sv, ok := f.Value.(pflag.SliceValue); ok {
				v.Set(d.key, sv.GetSlice())
			} else {
				v.Set(d.key, f.Value.String())
			}
			l.flagOf[d.key] = d.name
		}
	}

	c := l.decode()
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	c.File = file
	return c, nil
}

// fail records a problem with key. The layer the bad value came from is
// appended, since with four layers "where did that come from" is the
// first question.
func (l *loader) fail(key, format string, args ...any) {
	msg := fmt.Sprintf("config: %s: %s", key, fmt.Sprintf(format, args...))
	if src := l.source(key); src != "" {
		msg += " [from " + src + "]"
	}
	l.errs = append(l.errs, errors.New(msg))
}

// source names the layer that supplied key: a flag, a variable, the file,
// or "" for the default.
func (l *loader) source(key string) string {
	if f, ok := l.flagOf[key]; ok {
		return "--" + f
	}
	if l.useEnv {
		if _, ok := os.LookupEnv(envName(key)); ok {
			return envName(key)
		}
	}
	var node any = l.raw
	for _, part := range strings.Split(key, ".") {
		m, ok := node.(map[string]any)
		if !ok {
			return ""
		}
		if node, ok = m[part]; !ok {
			return ""
		}
	}
	if node != nil {
		return l.file
	}
	return ""
}

func (l *loader) decode() *Config {
	c := &Config{}

	c.Data, _ = l.str("data")
	if strings.TrimSpace(c.Data) == "" {
		l.fail("data", `"" is empty: give the directory where asof keeps its data (default %s)`, DefaultData)
	}
	var nfsOK, ninepOK bool
	c.NFS.Listen, nfsOK = l.listen("nfs.listen", "NFS", "2049")
	c.NineP.Listen, ninepOK = l.listen("ninep.listen", "9P", "5640")
	c.Metrics.Listen, _ = l.listen("metrics.listen", "metrics", "9090")
	if nfsOK && ninepOK && c.NFS.Listen == "" && c.NineP.Listen == "" {
		// A server that serves nothing is a mistake, not a mode: even a
		// read-only mirror target serves its copy (docs/SPEC.md section 6).
		l.errs = append(l.errs, errors.New(
			"config: nfs.listen and ninep.listen are both empty: nothing would be served (set at least one)"))
	}
	l.distinct(map[string]string{
		"nfs.listen": c.NFS.Listen, "ninep.listen": c.NineP.Listen, "metrics.listen": c.Metrics.Listen,
	})

	c.Control.Socket, _ = l.str("control.socket")
	if c.Control.Socket == "" && c.Data != "" {
		// Not filepath.Join: it would turn ./asof-data/control.sock into
		// asof-data/control.sock, and the spec and logs show the former.
		sep := string(filepath.Separator)
		c.Control.Socket = strings.TrimSuffix(c.Data, sep) + sep + controlSocketName
	}
	// bind(2) fails with a bare EINVAL on a path too long for sun_path; a
	// deep data directory makes the derived socket path hit this, so say so
	// here, with the fix.
	maxSock := 107 // Linux: 108 bytes including the NUL
	if runtime.GOOS == "darwin" || strings.HasSuffix(runtime.GOOS, "bsd") {
		maxSock = 103
	}
	if n := len(c.Control.Socket); n > maxSock {
		l.fail("control.socket", "%q is %d bytes long; unix socket paths are limited to %d here (set control.socket to a shorter path)",
			c.Control.Socket, n, maxSock)
	}

	c.Exports.ReadOnly = l.boolean("exports.read_only")
	c.Exports.Allow = l.allow("exports.allow")
	c.Exports.Squash = l.squash("exports.squash")
	c.Exports.AnonUID = l.id("exports.anon_uid", "user id")
	c.Exports.AnonGID = l.id("exports.anon_gid", "group id")

	c.History.TimezoneName, c.History.Timezone = l.timezone("history.timezone")
	c.History.FlushInterval = l.flushInterval("history.flush_interval")

	c.Retention = l.retention("retention")
	c.Volumes = l.volumes("volumes")
	c.VolumeCache = l.volumeCache("volume_cache")
	c.Mirror = l.mirror(c)
	return c
}

// show renders a value for a message: text quoted, so that an empty or
// space-padded value is visible, other scalars as they are.
func show(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case []any, []string:
		return fmt.Sprintf("a list %v", v)
	case map[string]any:
		return "a section"
	}
	return fmt.Sprint(v)
}

// scalarText returns a scalar as text: strings as they are, numbers as
// written (YAML reads `data: 2024` as a number, which is a fine directory
// name). Booleans, lists and sections are not text.
func scalarText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case json.Number:
		return v.String(), true
	}
	return "", false
}

func (l *loader) str(key string) (string, bool) {
	v := l.v.Get(key)
	s, ok := scalarText(v)
	if !ok {
		l.fail(key, "%s is not a text value", show(v))
	}
	return s, ok
}

// listen checks a listen address: host:port with a numeric port (0 picks a
// free port, handy for tests), or "" to disable. ok is false when the
// value was rejected.
func (l *loader) listen(key, what, port string) (addr string, ok bool) {
	s, ok := l.str(key)
	if !ok || s == "" {
		return "", ok
	}
	// Any host is fine: an IP, a name, or empty for every interface.
	_, p, err := net.SplitHostPort(s)
	if err == nil {
		_, err = strconv.ParseUint(p, 10, 16)
	}
	if err != nil {
		l.fail(key, "%q is not host:port (use e.g. 127.0.0.1:%s, [::1]:%s or :%s; empty disables %s)",
			s, port, port, port, what)
		return "", false
	}
	return s, true
}

// distinct rejects two listeners on the same address: the second bind
// would fail at start-up with a less helpful message. Port 0 is exempt.
func (l *loader) distinct(addrs map[string]string) {
	keys := []string{"nfs.listen", "ninep.listen", "metrics.listen"}
	for i, a := range keys {
		for _, b := range keys[i+1:] {
			if addrs[a] != "" && addrs[a] == addrs[b] && !strings.HasSuffix(addrs[a], ":0") {
				l.fail(b, "%q is also %s: each listener needs its own address", addrs[b], a)
			}
		}
	}
}

func (l *loader) boolean(key string) bool {
	switch v := l.v.Get(key).(type) {
	case bool:
		return v
	case string:
		if b, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil {
			return b
		}
	}
	l.fail(key, "%s is not a boolean (use true or false)", show(l.v.Get(key)))
	return false
}

// id parses a uid or gid. 4294967295 is (uid_t)-1, which chown and
// friends read as "leave unchanged", so it cannot be an identity.
func (l *loader) id(key, what string) uint32 {
	v := l.v.Get(key)
	s, ok := scalarText(v)
	if ok {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
		if err == nil && n < math.MaxUint32 {
			return uint32(n)
		}
	}
	l.fail(key, "%s is not a %s (use an integer from 0 to %d)", show(v), what, uint32(math.MaxUint32-1))
	return 0
}

// squash reads whose identity callers act as. fs names the values, so
// config and the file system cannot disagree on them; an empty value is
// refused rather than taken as the default, as for every other key.
func (l *loader) squash(key string) fs.Squash {
	s, ok := l.str(key)
	if !ok {
		return fs.SquashRoot
	}
	sq, err := fs.ParseSquash(strings.TrimSpace(s))
	if err != nil || strings.TrimSpace(s) == "" {
		l.fail(key, "%q is not a squash mode (use root: uid 0 acts as exports.anon_uid/anon_gid, as knfsd's root_squash; "+
			"none: every caller as itself, root included; all: every caller as the anonymous identity)", s)
		return fs.SquashRoot
	}
	return sq
}

// allow parses the client networks: CIDR prefixes, or bare addresses
// taken as /32 or /128. A list in the file; comma-separated text from the
// environment (or a single string in the file).
func (l *loader) allow(key string) []netip.Prefix {
	var entries []string
	switch v := l.v.Get(key).(type) {
	case string:
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				entries = append(entries, e)
			}
		}
	case []string:
		entries = v
	case []any:
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				l.fail(key, "entry %d %s is not a network (use CIDR such as 192.168.1.0/24 or fd00::/8, or a single address)", i+1, show(e))
				continue
			}
			entries = append(entries, s)
		}
	default:
		l.fail(key, "%s is not a list of networks (use e.g. [127.0.0.0/8, ::1/128])", show(v))
		return nil
	}
	var out []netip.Prefix
	for i, e := range entries {
		p, err := parsePrefix(strings.TrimSpace(e))
		if err != nil {
			l.fail(key, "entry %d %q is not a network (use CIDR such as 192.168.1.0/24 or fd00::/8, or a single address)", i+1, e)
			continue
		}
		out = append(out, p)
	}
	if len(entries) == 0 {
		l.fail(key, "the list is empty, so no client could connect (list networks such as 127.0.0.0/8; 0.0.0.0/0 and ::/0 allow everyone)")
	}
	return out
}

// parsePrefix accepts "10.0.0.0/8" and a bare "10.1.2.3" (as /32). Host
// bits are cleared: "10.1.2.3/8" means 10.0.0.0/8.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("not a network: %q", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (l *loader) timezone(key string) (string, *time.Location) {
	name, ok := l.str(key)
	if !ok {
		return "", nil
	}
	name = strings.TrimSpace(name)
	if name == "" {
		name = "UTC" // as time.LoadLocation("") has it
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		l.fail(key, "%q is not a known time zone (use an IANA name such as UTC, Europe/Paris or America/New_York, or Local)", name)
		return "", nil
	}
	return name, loc
}

func (l *loader) flushInterval(key string) time.Duration {
	s, ok := l.str(key)
	if !ok {
		return 0
	}
	d, err := ParseDuration(s)
	if err != nil {
		l.fail(key, "%q is not a duration (use e.g. 500ms, 1s, 2m)", s)
		return 0
	}
	if d < minFlushInterval || d > maxFlushInterval {
		l.fail(key, "%q is out of range (use 1ms to 1h: it is how often changes commit, the finest grain of history)", s)
		return 0
	}
	return d
}

// retention reads the rules: a list of {keep, for} objects in the file
// (or of "GRAIN for AGE" strings), or one compact string from the
// environment or a flag (see ParseRetention). Absent or empty: keep all.
func (l *loader) retention(key string) []Rule {
	var raws []rawRule
	switch v := l.v.Get(key).(type) {
	case nil:
		return nil
	case string:
		var err error
		if raws, err = splitRetention(v); err != nil {
			l.fail(key, "%v", err)
			return nil
		}
	case []any:
		for i, e := range v {
			switch e := e.(type) {
			case string:
				r, err := parseCompactRule(e)
				if err != nil {
					l.fail(key, "rule %d (%s): %v", i+1, e, err)
					continue
				}
				raws = append(raws, r)
			case map[string]any:
				var r rawRule
				r.keep, r.hasKeep = l.ruleField(key, i, e, "keep")
				r.age, r.hasFor = l.ruleField(key, i, e, "for")
				raws = append(raws, r)
			default:
				l.fail(key, "rule %d %s is not a rule (use {keep: 1m, for: 24h})", i+1, show(e))
			}
		}
	default:
		l.fail(key, "%s is not a list of rules (use e.g. [{keep: 1m, for: 24h}, {keep: 1h, for: forever}])", show(v))
		return nil
	}
	rules, errs := buildRetention(raws)
	for _, err := range errs {
		l.fail(key, "%v", err)
	}
	return rules
}

// ruleField returns a rule's keep or for as text. Numbers are accepted as
// text so that `keep: 30` reaches ParseDuration and is reported as a
// duration without a unit.
func (l *loader) ruleField(key string, i int, m map[string]any, field string) (string, bool) {
	v, ok := lookupFold(m, field)
	if !ok {
		return "", false
	}
	s, ok := scalarText(v)
	if !ok {
		l.fail(key, "rule %d: %s %s is not a duration", i+1, field, show(v))
		return "", false
	}
	return strings.TrimSpace(s), true
}

// lookupFold finds key in m ignoring case (viper lower-cases file keys,
// but a list built elsewhere may not be).
func lookupFold(m map[string]any, key string) (any, bool) {
	if v, ok := m[key]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// volumes reads the volume list, a file-only key: a list of objects does
// not fit in an environment variable or a flag.
func (l *loader) volumes(key string) []Volume {
	var list []any
	switch v := l.v.Get(key).(type) {
	case nil:
		return nil
	case []any:
		list = v
	case string:
		l.fail(key, "%s: volumes can only be listed in the config file", show(v))
		return nil
	default:
		l.fail(key, "%s is not a list of volumes (use e.g. [{name: disk1, path: /mnt/disk1}])", show(v))
		return nil
	}
	var out []Volume
	names := map[string]int{}
	paths := map[string]int{}
	for i, e := range list {
		n := i + 1
		m, ok := e.(map[string]any)
		if !ok {
			l.fail(key, "volume %d %s is not a volume (use {name: disk1, path: /mnt/disk1})", n, show(e))
			continue
		}
		text := func(field string) string {
			v, ok := lookupFold(m, field)
			if !ok {
				return ""
			}
			s, ok := scalarText(v)
			if !ok {
				l.fail(key, "volume %d: %s %s is not a text value", n, field, show(v))
			}
			return s
		}
		vol := Volume{Name: text("name"), Kind: text("kind"), Path: text("path")}
		label := fmt.Sprintf("volume %d (%s)", n, vol.Name)
		if vol.Name == "" {
			label = fmt.Sprintf("volume %d", n)
			l.fail(key, "%s: name is missing (a unique name such as disk1)", label)
		} else if !validVolumeName(vol.Name) {
			l.fail(key, "%s: name %q is not allowed (use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit)", label, vol.Name)
		} else if first, dup := names[vol.Name]; dup {
			l.fail(key, "%s: name %q is already volume %d's", label, vol.Name, first)
		} else {
			names[vol.Name] = n
		}
		s3raw, hasS3 := lookupFold(m, "s3")
		if s3m, ok := s3raw.(map[string]any); ok {
			get := func(field string) string {
				v, _ := lookupFold(s3m, field)
				s, _ := scalarText(v)
				return s
			}
			vol.S3 = S3{Endpoint: get("endpoint"), Bucket: get("bucket"), Prefix: get("prefix"),
				Region: get("region"), CredentialsFile: get("credentials_file"), Profile: get("profile")}
		}
		if vol.Kind == "" {
			vol.Kind = "dir"
		}
		switch vol.Kind {
		case "dir":
			if vol.Path == "" {
				l.fail(key, "%s: path is missing (the directory for its data blocks)", label)
			} else if first, dup := paths[filepath.Clean(vol.Path)]; dup {
				l.fail(key, "%s: path %q is already volume %d's", label, vol.Path, first)
			} else {
				paths[filepath.Clean(vol.Path)] = n
			}
			if hasS3 {
				l.fail(key, "%s: s3 settings are only for kind: s3", label)
			}
		case "s3":
			if vol.S3.Endpoint == "" || vol.S3.Bucket == "" {
				l.fail(key, "%s: kind s3 needs s3: {endpoint: URL, bucket: NAME}", label)
			}
			if vol.Path != "" {
				l.fail(key, "%s: path is only for kind: dir", label)
			}
		default:
			l.fail(key, "%s: kind %q is not a volume kind (use dir or s3)", label, vol.Kind)
		}
		out = append(out, vol)
	}
	return out
}

func validVolumeName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || (r != '.' && r != '_' && r != '-')) {
			return false
		}
	}
	return true
}
