package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/viper"
)

// Mirror configures mirrors (docs/SPEC.md section 6): this server as a
// source that targets pull from, as a target that follows a source, or
// both.
type Mirror struct {
	// Listen is where targets pull from, host:port; "" (the default)
	// serves none.
	Listen string
	// Allow is the networks targets may pull from; exports.allow when not
	// set.
	Allow []netip.Prefix
	// TokenFile holds the secret a target proves it knows: on a source it
	// is made (mode 0600, random) when Listen is set and it does not
	// exist; a target reads its source's copy. Default <data>/mirror.token.
	TokenFile string
	// Source is the host:port of the source this server follows; "" (the
	// default) follows none.
	Source string
	// BWLimit, when positive, is how many bytes a second a target reads
	// from its source at most; 0 (the default) is no limit.
	BWLimit int64
}

// Allows reports whether a target at addr may pull.
func (m Mirror) Allows(addr netip.Addr) bool {
	return Exports{Allow: m.Allow}.Allows(addr)
}

const mirrorTokenName = "mirror.token"

func mirrorDefaults(v *viper.Viper) {
	v.SetDefault("mirror.listen", "")
	v.SetDefault("mirror.token_file", "")
	v.SetDefault("mirror.source", "")
	v.SetDefault("mirror.bwlimit", "")
	// mirror.allow has no default of its own: unset, it is exports.allow.
}

// mirror decodes the mirror section; c's data and exports are decoded.
func (l *loader) mirror(c *Config) Mirror {
	var m Mirror
	m.Listen, _ = l.listen("mirror.listen", "the mirror source", "5641")
	if l.v.IsSet("mirror.allow") {
		m.Allow = l.allow("mirror.allow")
	} else {
		m.Allow = c.Exports.Allow
	}
	m.TokenFile, _ = l.str("mirror.token_file")
	if strings.TrimSpace(m.TokenFile) == "" && c.Data != "" {
		// As control.socket: ./asof-data stays ./asof-data in messages.
		m.TokenFile = strings.TrimSuffix(c.Data, "/") + "/" + mirrorTokenName
	}
	m.Source, _ = l.str("mirror.source")
	if m.Source != "" {
		if _, err := netip.ParseAddrPort(m.Source); err != nil {
			// A name is fine too; a port is not optional.
			if i := strings.LastIndex(m.Source, ":"); i <= 0 || !validPort(m.Source[i+1:]) {
				l.fail("mirror.source", "%q is not host:port (use e.g. backup.example.org:5641 or 192.168.1.2:5641; empty follows no source)", m.Source)
			}
		}
	}
	if bw, _ := l.str("mirror.bwlimit"); bw != "" {
		n, err := ParseBandwidth(bw)
		if err != nil {
			l.fail("mirror.bwlimit", "%v", err)
		}
		m.BWLimit = n
	}
	for key, addr := range map[string]string{"nfs.listen": c.NFS.Listen, "ninep.listen": c.NineP.Listen, "metrics.listen": c.Metrics.Listen} {
		if m.Listen != "" && m.Listen == addr && !strings.HasSuffix(addr, ":0") {
			l.fail("mirror.listen", "%q is also %s: each listener needs its own address", m.Listen, key)
		}
	}
	return m
}

// ParseBandwidth reads a rate in bytes a second: a size as ParseSize
// reads it, "/s" after it allowed ("10MiB", "512KiB/s"); "0" is no limit.
func ParseBandwidth(s string) (int64, error) {
	n, err := ParseSize(strings.TrimSuffix(strings.TrimSpace(s), "/s"))
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate: use bytes a second with a binary unit, e.g. 10MiB or 512KiB/s (0 is no limit)", s)
	}
	if n != 0 && n < 4096 {
		return 0, fmt.Errorf("%q is below the least rate a pull can keep its connection at, 4KiB/s (0 is no limit)", s)
	}
	return n, nil
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

// dumpMirror renders the mirror section for Config.String.
func (c *Config) dumpMirror(line func(format string, args ...any)) {
	q := strconv.Quote
	m := c.Mirror
	line("mirror:")
	line("  listen: %s", q(m.Listen))
	allow := make([]string, len(m.Allow))
	for i, p := range m.Allow {
		allow[i] = q(p.String())
	}
	line("  allow: [%s]", strings.Join(allow, ", "))
	line("  token_file: %s", q(m.TokenFile))
	line("  source: %s", q(m.Source))
	if m.BWLimit > 0 {
		line("  bwlimit: %s", q(FormatSize(m.BWLimit)+"/s"))
	} else {
		line("  bwlimit: %s", q(""))
	}
}
