package config

import (
	"fmt"
	"strconv"
	"strings"
)

// String renders the effective configuration as YAML with every key, for
// `asof serve --print-config` and for logs. The output is itself a valid
// config file: loading it gives the same Config (File aside).
func (c *Config) String() string {
	var b strings.Builder
	// strconv.Quote yields a YAML double-quoted scalar: YAML accepts the
	// same escapes (\", \\, \n, \t, \xXX, \uXXXX).
	q := strconv.Quote
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	if c.File != "" {
		line("# effective asof configuration; file %s", c.File)
	} else {
		line("# effective asof configuration; no file")
	}
	line("data: %s", q(c.Data))
	line("nfs:\n  listen: %s", q(c.NFS.Listen))
	line("ninep:\n  listen: %s", q(c.NineP.Listen))
	line("control:\n  socket: %s", q(c.Control.Socket))
	line("exports:")
	line("  read_only: %t", c.Exports.ReadOnly)
	allow := make([]string, len(c.Exports.Allow))
	for i, p := range c.Exports.Allow {
		allow[i] = q(p.String())
	}
	line("  allow: [%s]", strings.Join(allow, ", "))
	line("  squash: %s", q(c.Exports.Squash.String()))
	line("  anon_uid: %d", c.Exports.AnonUID)
	line("  anon_gid: %d", c.Exports.AnonGID)
	line("history:")
	line("  timezone: %s", q(c.History.TimezoneName))
	line("  flush_interval: %s", q(FormatDuration(c.History.FlushInterval)))
	if len(c.Retention) == 0 {
		line("retention: []  # keep all history")
	} else {
		line("retention:")
		for _, r := range c.Retention {
			age := "forever"
			if !r.Forever {
				age = FormatDuration(r.For)
			}
			line("  - {keep: %s, for: %s}", q(FormatDuration(r.Keep)), q(age))
		}
	}
	if len(c.Volumes) == 0 {
		line("volumes: []  # one volume inside data")
	} else {
		line("volumes:")
		for _, v := range c.Volumes {
			line("  - name: %s", q(v.Name))
			line("    kind: %s", q(v.Kind))
			line("    path: %s", q(v.Path))
			if v.S3 != (S3{}) {
				line("    s3:")
				line("      endpoint: %s", q(v.S3.Endpoint))
				line("      bucket: %s", q(v.S3.Bucket))
				line("      prefix: %s", q(v.S3.Prefix))
				line("      region: %s", q(v.S3.Region))
				line("      credentials_file: %s", q(v.S3.CredentialsFile))
				line("      profile: %s", q(v.S3.Profile))
			}
		}
	}
	line("volume_cache: %s", q(FormatSize(c.VolumeCache)))
	line("metrics:\n  listen: %s", q(c.Metrics.Listen))
	c.dumpMirror(line)
	return b.String()
}
