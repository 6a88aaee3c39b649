package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/server"
)

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
			if err := c.call("GET", server.PathHistory+"?path="+url.QueryEscape(servedPath(args[0])), nil, &vs); err != nil {
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
