package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/asof/asof/config"
	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/server"
)

var errNotRunning = errors.New("the server is not running")

// client talks to a running server over its control socket.
type client struct {
	socket string
	http   *http.Client
}

func newClient(g *globals) (*client, error) {
	socket := os.Getenv("ASOF_CONTROL_SOCKET")
	if socket == "" {
		cfg, err := config.Load(g.configFile, nil)
		if err != nil {
			return nil, err
		}
		socket = cfg.Control.Socket
	}
	return &client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}, nil
}

func (c *client) do(method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://asof"+path, r)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (no answer on control socket %s): %w", errNotRunning, c.socket, errors.Unwrap(errors.Unwrap(err)))
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e server.APIError
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("the server answered %s", resp.Status)
	}
	return resp, nil
}

func (c *client) call(method, path string, body, out any) error {
	resp, err := c.do(method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// servedPath makes an admin argument a path inside the served tree: the
// leading slash is optional.
func servedPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

func historyCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "history PATH",
		Short:   "List the versions of a file or directory",
		Example: "  asof history /docs/a.txt\n  asof history --json docs/a.txt",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var vs []fs.VersionInfo
			if err := c.call("GET", "/v1/history?path="+url.QueryEscape(servedPath(args[0])), nil, &vs); err != nil {
				return fmt.Errorf("history %s: %w", args[0], err)
			}
			if asJSON {
				if vs == nil {
					vs = []fs.VersionInfo{}
				}
				return json.NewEncoder(cmd.OutOrStdout()).Encode(vs)
			}
			if len(vs) == 0 {
				// Made since the last commit: a version only once committed.
				fmt.Fprintf(cmd.ErrOrStderr(), "%s has no committed version yet: changes become versions at the next commit (every history.flush_interval)\n", args[0])
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TID\tTIME\tSIZE\tCHANGE")
			for _, v := range vs {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", v.TID, v.Time, v.Size, v.Change)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func cloneCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "clone SRC DST",
		Short:   "Copy a file or tree on the server, sharing all data",
		Example: "  asof clone /docs /docs-copy\n  asof clone docs@@2007-08-06 docs-restored",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var out map[string]string
			if err := c.call("POST", "/v1/clone", map[string]string{"src": servedPath(args[0]), "dst": servedPath(args[1])}, &out); err != nil {
				return fmt.Errorf("clone %s %s: %w", args[0], args[1], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cloned %s to %s\n", out["src"], out["dst"])
			return nil
		},
	}
}

func restoreCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "restore PATH@@WHEN",
		Short:   "Make a live path what it was at a moment, as a new change",
		Example: "  asof restore /docs@@2007-08-06\n  asof restore docs/a.txt@@-1h",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var out map[string]string
			if err := c.call("POST", "/v1/restore", map[string]string{"path": servedPath(args[0])}, &out); err != nil {
				return fmt.Errorf("restore %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s from %s\n", out["restored"], out["path"])
			return nil
		},
	}
}

func statsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print logical and stored bytes, dedup ratio, objects, versions, oldest moment",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var st server.StatsReply
			if err := c.call("GET", "/v1/stats", nil, &st); err != nil {
				return fmt.Errorf("stats: %w", err)
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(st)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "logical bytes\t%d\n", st.LogicalBytes)
			fmt.Fprintf(w, "stored bytes\t%d\t(blocks %d)\n", st.StoredBytes, st.BlockBytes)
			fmt.Fprintf(w, "dedup ratio\t%.2f\n", st.DedupRatio)
			fmt.Fprintf(w, "objects\t%d\n", st.Objects)
			fmt.Fprintf(w, "versions\t%d\n", st.Versions)
			fmt.Fprintf(w, "records\t%d\n", st.Records)
			fmt.Fprintf(w, "oldest\t%s\n", st.Oldest)
			fmt.Fprintf(w, "newest\t%s\n", st.Newest)
			fmt.Fprintf(w, "retention\t%s\n", st.Retention)
			if p := st.LastPrune; p != nil {
				fmt.Fprintf(w, "last prune\t%s: %d records, stored %d -> %d\n", p.At.Format(time.RFC3339), p.Records, p.StoredBefore, p.StoredAfter)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func verifyCmd(g *globals) *cobra.Command {
	var offline bool
	cmd := &cobra.Command{
		Use:   "verify [--offline]",
		Short: "Check every record and block against its checksum",
		Long: `Check every record and block against its checksum, through the running server.
With --offline, check the data directory (from the config, as serve finds it) with
no server running: also a store whose damage keeps it from opening.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r history.Report
			if offline {
				rep, err := verifyOffline(g, cmd)
				if err != nil {
					return err
				}
				r = *rep
			} else if err := streamCall(g, cmd, "verify", "/v1/verify", nil, &r); err != nil {
				if errors.Is(err, errNotRunning) {
					return fmt.Errorf("%w; asof verify --offline checks the data directory without it", err)
				}
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "checked %d transactions, %d records, %d blocks\n", r.Frames, r.Records, r.Blocks)
			for _, p := range r.Problems {
				fmt.Fprintln(out, "DAMAGED:", p)
			}
			if len(r.Problems) > 0 {
				return fmt.Errorf("verify: %d problems found", len(r.Problems))
			}
			fmt.Fprintln(out, "ok: no damage found")
			return nil
		},
	}
	cmd.Flags().BoolVar(&offline, "offline", false, "check the data directory with no server running")
	return cmd
}

// verifyOffline checks the configured data directory in this process.
func verifyOffline(g *globals, cmd *cobra.Command) (*history.Report, error) {
	cfg, err := config.Load(g.configFile, nil)
	if err != nil {
		return nil, err
	}
	logger, err := newLogger(g.logFormat) // what opening the store says (a replay, a torn tail cut)
	if err != nil {
		return nil, err
	}
	bar := newProgress(cmd.ErrOrStderr(), "verify")
	defer bar.done()
	rep, err := history.VerifyDir(cfg.Data, history.Options{Logger: logger}, bar.show)
	if errors.Is(err, history.ErrLocked) {
		return nil, fmt.Errorf("verify: %s is in use by another process, the server most likely: run asof verify without --offline", cfg.Data)
	}
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return rep, nil
}

func pruneCmd(g *globals) *cobra.Command {
	var dry, asJSON bool
	cmd := &cobra.Command{
		Use:   "prune [--dry-run]",
		Short: "Run the cleaner now: thin history by the retention policy and free what no kept moment needs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r history.PruneReport
			if err := streamCall(g, cmd, "prune", "/v1/prune", server.PruneRequest{DryRun: dry}, &r); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(pruneJSON(r))
			}
			verb := "removed"
			if dry {
				verb = "would remove"
				fmt.Fprintln(out, "dry run: nothing was changed")
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "moments collapsed\t%d\n", r.Moments)
			fmt.Fprintf(w, "records %s\t%d\n", verb, r.Records)
			fmt.Fprintf(w, "versions merged\t%d\n", r.Versions)
			fmt.Fprintf(w, "blocks freed\t%d (%s)\n", r.Blocks, humanBytes(r.BlockBytes))
			fmt.Fprintf(w, "stored bytes\t%s -> %s\n", humanBytes(r.StoredBefore), humanBytes(r.StoredAfter))
			if r.Oldest != 0 {
				fmt.Fprintf(w, "oldest moment\t%s\n", fs.FormatMoment(r.Oldest.Time()))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "report what a pass would remove, change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// pruneJSON is the --json form of a prune report.
func pruneJSON(r history.PruneReport) map[string]any {
	m := map[string]any{
		"dry_run": r.DryRun, "moments": r.Moments, "records": r.Records, "versions": r.Versions,
		"blocks": r.Blocks, "block_bytes": r.BlockBytes, "stored_before": r.StoredBefore, "stored_after": r.StoredAfter,
	}
	if r.Oldest != 0 {
		m["oldest"] = fs.FormatMoment(r.Oldest.Time())
	}
	return m
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// streamCall runs a long operation on the server, showing its progress,
// and decodes its report into out.
func streamCall(g *globals, cmd *cobra.Command, name, path string, body, out any) error {
	c, err := newClient(g)
	if err != nil {
		return err
	}
	resp, err := c.do("POST", path, body)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer resp.Body.Close()
	bar := newProgress(cmd.ErrOrStderr(), name)
	defer bar.done()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var l server.StreamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("%s: bad answer: %w", name, err)
		}
		switch {
		case l.Error != "":
			return fmt.Errorf("%s: %s", name, l.Error)
		case l.Report != nil:
			if err := json.Unmarshal(l.Report, out); err != nil {
				return fmt.Errorf("%s: bad report: %w", name, err)
			}
			return nil
		default:
			bar.show(l.Stage, l.Done, l.Total)
		}
	}
	return fmt.Errorf("%s: the server stopped answering: %v", name, sc.Err())
}

// progress draws a bar on a terminal and writes a line now and then
// otherwise.
type progress struct {
	w     io.Writer
	name  string
	tty   bool
	last  time.Time
	stage string
	drawn bool
}

func newProgress(w io.Writer, name string) *progress {
	p := &progress{w: w, name: name}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) show(stage string, done, total int64) {
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	newStage := stage != p.stage
	p.stage = stage
	if p.tty {
		if newStage && p.drawn {
			fmt.Fprintln(p.w) // each stage keeps a bar of its own
		}
		n := int(pct / 5)
		fmt.Fprintf(p.w, "\r%-7s [%-20s] %5.1f%%", stage, strings.Repeat("=", n), pct)
		p.drawn = true
		return
	}
	// Not a terminal: a line when a stage starts or ends, and every two
	// seconds in between.
	if newStage || done >= total || time.Since(p.last) > 2*time.Second {
		p.last = time.Now()
		fmt.Fprintf(p.w, "%s: %s %.1f%%\n", p.name, stage, pct)
	}
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
