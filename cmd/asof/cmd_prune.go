package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/server"
)

func pruneCmd(g *globals) *cobra.Command {
	var dry, asJSON bool
	cmd := &cobra.Command{
		Use:   "prune [--dry-run]",
		Short: "Run the cleaner now: thin history by the retention policy and free what no kept moment needs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r history.PruneReport
			if err := streamCall(g, cmd, "prune", server.PathPrune, server.PruneRequest{DryRun: dry}, &r); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(newPruneJSON(r))
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

// pruneJSON is the --json form of a prune report: snake_case keys, and
// the oldest moment written as a name@@ listing shows it.
type pruneJSON struct {
	DryRun       bool   `json:"dry_run"`
	Moments      int64  `json:"moments"`
	Records      int64  `json:"records"`
	Versions     int64  `json:"versions"`
	Blocks       int64  `json:"blocks"`
	BlockBytes   int64  `json:"block_bytes"`
	StoredBefore int64  `json:"stored_before"`
	StoredAfter  int64  `json:"stored_after"`
	Oldest       string `json:"oldest,omitempty"`
}

func newPruneJSON(r history.PruneReport) pruneJSON {
	out := pruneJSON{DryRun: r.DryRun, Moments: r.Moments, Records: r.Records, Versions: r.Versions,
		Blocks: r.Blocks, BlockBytes: r.BlockBytes, StoredBefore: r.StoredBefore, StoredAfter: r.StoredAfter}
	if r.Oldest != 0 {
		out.Oldest = fs.FormatMoment(r.Oldest.Time())
	}
	return out
}
