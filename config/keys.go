package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"
)

// The known keys, dotted, leaves only: sections (nfs, exports, ...) are the
// prefixes. This list is the single source of truth for which keys a file
// may hold and which ASOF_* variables exist.
var fileKeys = []string{
	"data",
	"nfs.listen",
	"ninep.listen",
	"control.socket",
	"exports.read_only",
	"exports.allow",
	"exports.squash",
	"exports.anon_uid",
	"exports.anon_gid",
	"history.timezone",
	"history.flush_interval",
	"retention",
	"volumes",
	"volume_cache",
	"metrics.listen",
	"mirror.listen",
	"mirror.allow",
	"mirror.token_file",
	"mirror.source",
	"mirror.bwlimit",
}

// removedKeys are keys that earlier builds read, with what replaces them:
// a config that still sets one is refused with this, not with a bare
// "unknown key", since its meaning changed rather than its spelling.
var removedKeys = map[string]string{
	"exports.uid": exportsIDGone,
	"exports.gid": exportsIDGone,
}

const exportsIDGone = "is gone: callers now act as the uid, gid and groups their requests carry (NFS AUTH_SYS, the 9P attach); " +
	"exports.squash (root, none or all) says who acts as the anonymous identity instead, " +
	"and exports.anon_uid and exports.anon_gid set that identity (default 65534); remove the key"

// Keys of the objects inside the list-valued keys.
var (
	ruleKeys   = []string{"keep", "for"}
	volumeKeys = []string{"name", "kind", "path",
		"s3.endpoint", "s3.bucket", "s3.prefix", "s3.region", "s3.credentials_file", "s3.profile"}
)

// EnvConfigFile names the config file when Load is given none. It is not a
// config key, so it is the one ASOF_* variable besides the keys' own that
// is accepted.
const EnvConfigFile = "ASOF_CONFIG"

// envName is the environment variable of a key: ASOF_ + the key upper-cased
// with dots as underscores (docs/SPEC.md section 2).
func envName(key string) string {
	return "ASOF_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// checkEnv rejects ASOF_* variables that name no key. A typo such as
// ASOF_NFS_LISTN would otherwise be silently ignored and the server would
// start on an address nobody asked for; docs/SPEC.md section 2 wants
// unknown keys to stop start-up, and an environment variable is a key
// spelled differently.
func checkEnv(environ []string) []error {
	known := map[string]bool{EnvConfigFile: true}
	var names []string
	for _, k := range fileKeys {
		known[envName(k)] = true
		names = append(names, envName(k))
	}
	var errs []error
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "ASOF_") || known[name] {
			continue
		}
		if key, why := removedEnv(name); key != "" {
			errs = append(errs, fmt.Errorf("config: environment variable %s (%s) %s", name, key, why))
			continue
		}
		msg := fmt.Sprintf("config: environment variable %s is not a setting", name)
		if s := suggest(name, append(names, EnvConfigFile)); s != "" {
			msg += fmt.Sprintf("; did you mean %s?", s)
		} else {
			msg += fmt.Sprintf(" (known: %s, %s)", strings.Join(names, ", "), EnvConfigFile)
		}
		errs = append(errs, fmt.Errorf("%s", msg))
	}
	return errs
}

// removedEnv returns the removed key that variable name sets, and why it
// is gone, or "", "".
func removedEnv(name string) (key, why string) {
	for k, why := range removedKeys {
		if envName(k) == name {
			return k, why
		}
	}
	return "", ""
}

// readFile parses a config file into plain maps, lists and scalars.
//
// The file is parsed here rather than by viper because viper's merged view
// cannot answer what the checks below need: it drops keys whose value is
// null (so `listen:` with nothing after it would silently mean the
// default, not "disabled") and folds sections it does not know into its
// own key space. The parsed map is handed to viper afterwards, which does
// the layering with defaults, environment and flags.
func readFile(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var m map[string]any
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml", "":
		// A file without extension is YAML, the documented format.
		if err := yaml.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("config: %s: not valid YAML: %v", path, err)
		}
	case ".json":
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // keep uids exact, and tell 1 from 1.5
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("config: %s: not valid JSON: %v", path, err)
		}
		if dec.Decode(new(any)) != io.EOF {
			return nil, fmt.Errorf("config: %s: not valid JSON: more data after the top-level object", path)
		}
	case ".toml":
		if err := toml.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("config: %s: not valid TOML: %v", path, err)
		}
	default:
		return nil, fmt.Errorf("config: %s: unknown file type %q (use .yaml, .yml, .toml or .json)", path, ext)
	}
	if m == nil {
		m = map[string]any{} // an empty file: all defaults
	}
	return normalize(m).(map[string]any), nil
}

// normalize turns the map[any]any a YAML decoder may produce into
// map[string]any all the way down, so the rest of the package sees one shape.
func normalize(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = normalize(e)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = normalize(e)
		}
		return v
	}
	return v
}

// checkFileKeys walks every key of the file, nested ones and the ones
// inside retention rules and volumes included, against the known keys.
func checkFileKeys(file string, m map[string]any) []error {
	return checkKeys(file, m, "", "", fileKeys)
}

// checkKeys checks map m, found at schema path rel (e.g. "exports.") and
// displayed with prefix where (e.g. "volume 2: "), against the leaf keys
// known (relative, dotted). Keys compare case-insensitively, as viper reads
// them.
func checkKeys(file string, m map[string]any, where, rel string, known []string) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s%s", file, where, fmt.Sprintf(format, args...)))
	}
	seen := map[string]string{}
	for _, k := range sortedKeys(m) {
		v := m[k]
		lk := strings.ToLower(k)
		full := rel + lk
		if other, dup := seen[lk]; dup {
			fail("key %q is given twice (as %q and %q; keys ignore case)", full, other, k)
			continue
		}
		seen[lk] = k
		switch {
		case contains(known, full):
			if v == nil {
				fail("%s has no value: give one (\"\" for empty) or remove the key to use the default", full)
				continue
			}
			if rel == "" && where == "" {
				errs = append(errs, checkListKeys(file, full, v)...)
			}
		case isSection(known, full):
			if v == nil {
				continue // an empty section sets nothing
			}
			sub, ok := v.(map[string]any)
			if !ok {
				fail("%s is a section (with keys %s), not a value: got %s",
					full, strings.Join(children(known, full), ", "), show(v))
				continue
			}
			errs = append(errs, checkKeys(file, sub, where, full+".", known)...)
		case where == "" && removedKeys[full] != "":
			fail("%s %s", full, removedKeys[full])
		default:
			msg := fmt.Sprintf("unknown key %q", full)
			siblings := children(known, strings.TrimSuffix(rel, "."))
			if s := suggest(lk, siblings); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", rel+s)
			} else if rel == "" {
				msg += fmt.Sprintf(" (known keys: %s)", strings.Join(siblings, ", "))
			} else {
				msg += fmt.Sprintf(" (%s takes: %s)", strings.TrimSuffix(rel, "."), strings.Join(siblings, ", "))
			}
			fail("%s", msg)
		}
	}
	return errs
}

// checkListKeys checks the objects inside retention and volumes. Their
// values (and whether the list itself is a list) are checked when decoding;
// here only the key names.
func checkListKeys(file, key string, v any) []error {
	list, ok := v.([]any)
	if !ok {
		return nil
	}
	var errs []error
	for i, e := range list {
		obj, ok := e.(map[string]any)
		if !ok {
			continue
		}
		switch key {
		case "retention":
			errs = append(errs, checkKeys(file, obj, fmt.Sprintf("retention rule %d: ", i+1), "", ruleKeys)...)
		case "volumes":
			errs = append(errs, checkKeys(file, obj, fmt.Sprintf("volume %d: ", i+1), "", volumeKeys)...)
		}
	}
	return errs
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// isSection reports whether some known key lies under section.
func isSection(known []string, section string) bool {
	for _, k := range known {
		if strings.HasPrefix(k, section+".") {
			return true
		}
	}
	return false
}

// children lists the distinct next path elements under section ("" for the
// top level), sorted: the keys a user may write there.
func children(known []string, section string) []string {
	prefix := ""
	if section != "" {
		prefix = section + "."
	}
	set := map[string]bool{}
	for _, k := range known {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			first, _, _ := strings.Cut(rest, ".")
			set[first] = true
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic messages
	return keys
}

// suggest returns the candidate closest to s when it is close enough to be
// a likely typo (edit distance at most 2, and less than half of s), or "".
func suggest(s string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestDist && 2*d < len(s) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
