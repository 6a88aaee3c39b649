package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/asof/asof/server"
)

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
			if err := c.call("GET", server.PathStats, nil, &st); err != nil {
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
