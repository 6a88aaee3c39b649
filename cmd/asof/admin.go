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
	"github.com/asof/asof/server"
)

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
		return nil, fmt.Errorf("the server is not running (no answer on control socket %s): %w", c.socket, errors.Unwrap(errors.Unwrap(err)))
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
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TID\tTIME\tSIZE\tCHANGE")
			for _, v := range vs {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", v.TID, v.Time.UTC().Format(time.RFC3339Nano), v.Size, v.Change)
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
			var st fs.Stats
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
			fmt.Fprintf(w, "oldest\t%s\n", st.Oldest.UTC().Format(time.RFC3339Nano))
			fmt.Fprintf(w, "newest\t%s\n", st.Newest.UTC().Format(time.RFC3339Nano))
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func verifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check every record and block against its checksum",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			resp, err := c.do("POST", "/v1/verify", nil)
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			defer resp.Body.Close()
			bar := newProgress(cmd.ErrOrStderr())
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for sc.Scan() {
				var l server.VerifyLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					return fmt.Errorf("verify: bad answer: %w", err)
				}
				switch {
				case l.Error != "":
					bar.done()
					return fmt.Errorf("verify: %s", l.Error)
				case l.Report != nil:
					bar.done()
					r := l.Report
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
				default:
					bar.show(l.Stage, l.Done, l.Total)
				}
			}
			return fmt.Errorf("verify: the server stopped answering: %v", sc.Err())
		},
	}
}

// progress draws a bar on a terminal and writes a line now and then
// otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
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
	if p.tty {
		n := int(pct / 5)
		fmt.Fprintf(p.w, "\r%-7s [%-20s] %5.1f%%", stage, strings.Repeat("=", n), pct)
		p.drawn = true
		return
	}
	if time.Since(p.last) > 2*time.Second {
		p.last = time.Now()
		fmt.Fprintf(p.w, "verify: %s %.1f%%\n", stage, pct)
	}
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
