package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/asof/asof/config"
	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/mirror"
	"github.com/asof/asof/server"
)

// asof mirror pull|status|verify|promote (docs/SPEC.md section 6).
func mirrorCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mirror",
		Short: "Keep a second store up to date with this one, or follow one",
		Long: `A mirror is a second asof store that follows a source by its transactions.
A server with mirror.listen is a source; one with mirror.source follows one and
serves its copy read-only, with full history, until promoted.`,
	}
	cmd.AddCommand(mirrorPullCmd(g), mirrorStatusCmd(g), mirrorVerifyCmd(g), mirrorPromoteCmd(g))
	return cmd
}

func mirrorPullCmd(g *globals) *cobra.Command {
	var data, tokenFile, retention, bwlimit string
	cmd := &cobra.Command{
		Use:   "pull HOST:PORT --data DIR",
		Short: "Bring an offline mirror (a backup disk) up to date with its source, once",
		Long: `Bring the mirror in DIR up to the source's newest transaction and exit. An empty
or missing DIR becomes a new mirror. With --retention, the mirror's own policy
thins what it holds afterwards, as a server's cleaner would.`,
		Example: "  asof mirror pull backup.example.org:5641 --data /mnt/backup/asof --token-file /etc/asof/mirror.token",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				return errors.New("mirror pull: --data DIR is required: the mirror's data directory")
			}
			if tokenFile == "" {
				tokenFile = filepath.Join(data, "mirror.token")
			}
			var policy history.Policy
			if retention != "" {
				rules, err := config.ParseRetention(retention)
				if err != nil {
					return fmt.Errorf("mirror pull: --retention: %w", err)
				}
				for _, r := range rules {
					policy = append(policy, history.Rule{Keep: r.Keep, For: r.For, Forever: r.Forever})
				}
				if err := policy.Validate(); err != nil {
					return fmt.Errorf("mirror pull: --retention: %w", err)
				}
			}
			var bps int64
			if bwlimit != "" {
				var err error
				if bps, err = config.ParseBandwidth(bwlimit); err != nil {
					return fmt.Errorf("mirror pull: --bwlimit: %w", err)
				}
			}
			token, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("mirror pull: token: %w (copy the source's mirror.token there, or name it with --token-file)", err)
			}
			log, err := newLogger(g.logFormat)
			if err != nil {
				return err
			}
			if !history.IsStore(data) {
				if err := history.CreateMirror(data); err != nil {
					return fmt.Errorf("mirror pull: %w", err)
				}
			}
			s, err := history.Open(data, history.Options{Logger: log})
			if err != nil {
				if errors.Is(err, history.ErrLocked) {
					return fmt.Errorf("mirror pull: %s is in use (a server follows the source into it already?): %w", data, err)
				}
				return fmt.Errorf("mirror pull: %w", err)
			}
			defer s.Close()
			if !s.Mirror() {
				return fmt.Errorf("mirror pull: %s is a store of its own, not a mirror", data)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			t := mirror.NewTarget(s, args[0], mirror.TargetOptions{Token: []byte(trimSpace(token)), Logger: log, BytesPerSec: bps})
			start, from := time.Now(), s.LastTID()
			line := newStatusLine(cmd.ErrOrStderr())
			err = t.Pull(ctx, func(st mirror.TargetStatus) { line.show(pullLine(st)) })
			line.done()
			if err != nil {
				return fmt.Errorf("mirror pull: %w", err)
			}
			st := t.Status()
			fmt.Fprintf(cmd.OutOrStdout(), "pulled %d transactions and %d blocks (%s) in %s: the mirror is at %s",
				st.Frames, st.Blocks, humanBytes(st.Bytes), time.Since(start).Round(time.Millisecond), fs.FormatTID(uint64(st.Position)))
			if st.Position == from {
				fmt.Fprint(cmd.OutOrStdout(), " (it was up to date)")
			}
			fmt.Fprintln(cmd.OutOrStdout())
			if len(policy) > 0 {
				rep, err := s.Prune(policy, history.PruneOptions{})
				if err != nil && !errors.Is(err, history.ErrMirrorNoRoom) {
					return fmt.Errorf("mirror pull: retention: %w", err)
				}
				if rep != nil && rep.Records > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "retention: %d moments thinned, %d records removed\n", rep.Moments, rep.Records)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the mirror's data directory (made if empty or missing)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "the source's token (default <data>/mirror.token)")
	cmd.Flags().StringVar(&bwlimit, "bwlimit", "", "read from the source at most this many bytes a second, e.g. 10MiB (default: no limit)")
	cmd.Flags().StringVar(&retention, "retention", "", `the mirror's own retention, e.g. "1d for 30d, 1w for forever" (default: keep all it receives)`)
	return cmd
}

func trimSpace(b []byte) string { return strings.TrimSpace(string(b)) }

func pullLine(st mirror.TargetStatus) string {
	s := fmt.Sprintf("pulled %d transactions, %d blocks, %s", st.Frames, st.Blocks, humanBytes(st.Bytes))
	if st.Rate > 0 {
		s += fmt.Sprintf(" (%s/s)", humanBytes(int64(st.Rate)))
	}
	if st.Position != 0 {
		s += "; at " + fs.FormatMoment(st.Position.Time()) + ", " + st.Lag.Round(time.Second).String() + " behind"
	}
	return s
}

// statusLine keeps one line up to date on a terminal, and writes a line
// every few seconds elsewhere.
type statusLine struct {
	w     io.Writer
	tty   bool
	last  time.Time
	drawn bool
}

func newStatusLine(w io.Writer) *statusLine {
	return &statusLine{w: w, tty: newProgress(w, "").tty}
}

func (l *statusLine) show(s string) {
	if l.tty {
		if time.Since(l.last) < 100*time.Millisecond {
			return
		}
		l.last = time.Now()
		fmt.Fprintf(l.w, "\r\033[K%s", s)
		l.drawn = true
		return
	}
	if time.Since(l.last) > 2*time.Second {
		l.last = time.Now()
		fmt.Fprintln(l.w, s)
	}
}

func (l *statusLine) done() {
	if l.drawn {
		fmt.Fprintln(l.w)
	}
}

func mirrorStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "On a source, the targets pulling; on a target, its source, position, lag and rate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var st server.MirrorStatus
			if err := c.call("GET", server.PathMirrorStatus, nil, &st); err != nil {
				return fmt.Errorf("mirror status: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(st)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			role := "a store of its own"
			if st.Mirror {
				role = "a read-only mirror"
			}
			fmt.Fprintf(w, "store\t%s, lineage %s, store id %s\n", role, st.Lineage, st.StoreID)
			fmt.Fprintf(w, "newest\t%s\n", momentText(st.Last))
			if t := st.Target; t != nil {
				fmt.Fprintf(w, "source\t%s (%s)\n", t.Source, t.State)
				if t.Error != "" {
					fmt.Fprintf(w, "last error\t%s\n", t.Error)
				}
				fmt.Fprintf(w, "position\t%s\n", momentText(t.Position))
				fmt.Fprintf(w, "source at\t%s\n", momentText(t.SourceLast))
				fmt.Fprintf(w, "lag\t%s\n", t.Lag.Round(time.Millisecond))
				fmt.Fprintf(w, "rate\t%s/s\n", humanBytes(int64(t.Rate)))
				fmt.Fprintf(w, "received\t%s, %d transactions, %d blocks since %s\n", humanBytes(t.Bytes), t.Frames, t.Blocks, t.Since.Format(time.RFC3339))
			}
			if s := st.Source; s != nil {
				fmt.Fprintf(w, "targets\t%d\n", len(s.Targets))
				w.Flush()
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TARGET\tADDRESS\tPOSITION\tLAG\tSENT")
				for _, p := range s.Targets {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, p.Addr, momentText(p.Position), lagText(p), humanBytes(p.SentBytes))
				}
				return tw.Flush()
			}
			if st.Target == nil && !st.Mirror {
				fmt.Fprintln(w, "mirrors\tnone: set mirror.listen to serve targets, mirror.source to follow a source")
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func momentText(t history.TID) string {
	if t == 0 {
		return "nothing yet"
	}
	return fs.FormatMoment(t.Time()) + " (" + fs.FormatTID(uint64(t)) + ")"
}

func lagText(p mirror.PeerStatus) string {
	if p.Position == 0 {
		return "starting"
	}
	return p.Lag.Round(time.Millisecond).String()
}

func mirrorVerifyCmd(g *globals) *cobra.Command {
	var data, source, tokenFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Compare the mirror's newest moment with its source's, path by path",
		Long: `Compare the tree the mirror shows at its newest moment with the source's at the
same transaction, and name every path that differs (damage included). Through
the running target server; with --data and --source, on an offline mirror.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep mirror.VerifyReport
			if data != "" {
				if source == "" {
					return errors.New("mirror verify: --data needs --source HOST:PORT")
				}
				if tokenFile == "" {
					tokenFile = filepath.Join(data, "mirror.token")
				}
				token, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("mirror verify: token: %w", err)
				}
				log, err := newLogger(g.logFormat)
				if err != nil {
					return err
				}
				s, err := history.Open(data, history.Options{Logger: log})
				if err != nil {
					return fmt.Errorf("mirror verify: %w", err)
				}
				defer s.Close()
				bar := newStatusLine(cmd.ErrOrStderr())
				r, err := mirror.NewTarget(s, source, mirror.TargetOptions{Token: []byte(trimSpace(token)), Logger: log, Name: "verify"}).
					Verify(cmd.Context(), func(n int64) { bar.show(fmt.Sprintf("verify: %d paths compared", n)) })
				bar.done()
				if err != nil {
					return fmt.Errorf("mirror verify: %w", err)
				}
				rep = *r
			} else if err := streamCall(g, cmd, "mirror verify", server.PathMirrorVerify, nil, &rep); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				json.NewEncoder(out).Encode(rep)
			} else {
				fmt.Fprintf(out, "compared %d paths at %s\n", rep.Paths, momentText(rep.At))
				if rep.Note != "" {
					fmt.Fprintln(out, "note:", rep.Note)
				}
				for _, d := range rep.Differences {
					fmt.Fprintf(out, "DIFFERS: %s: %s\n", d.Path, d.Reason)
				}
			}
			if !rep.OK() {
				return fmt.Errorf("mirror verify: %d paths differ", len(rep.Differences))
			}
			if !asJSON {
				fmt.Fprintln(out, "ok: the mirror reads as its source")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "an offline mirror's data directory")
	cmd.Flags().StringVar(&source, "source", "", "its source, HOST:PORT (with --data)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "the source's token (with --data; default <data>/mirror.token)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func mirrorPromoteCmd(g *globals) *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "promote",
		Short: "Make a mirror a writable store of its own",
		Long: `Make the mirror a writable store with a lineage of its own: it stops following
its source, and no target of the source may follow it. Through the running
server; with --data, an offline mirror.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if data != "" {
				s, err := history.Open(data, history.Options{})
				if err != nil {
					return fmt.Errorf("mirror promote: %w", err)
				}
				if err := s.Promote(); err != nil {
					s.Close()
					return fmt.Errorf("mirror promote: %w", err)
				}
				fmt.Fprintf(out, "promoted %s: writable, lineage %s, newest %s\n", data, s.Lineage(), momentText(s.LastTID()))
				return s.Close()
			}
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var res server.MirrorPromoteReply
			if err := c.call("POST", server.PathMirrorPromote, nil, &res); err != nil {
				return fmt.Errorf("mirror promote: %w", err)
			}
			fmt.Fprintf(out, "promoted: writable, lineage %s, newest %s\n", res.Lineage, momentText(res.Last))
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "an offline mirror's data directory")
	return cmd
}
