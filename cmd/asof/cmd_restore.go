package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/asof/asof/server"
)

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
			var out server.RestoreReply
			if err := c.call("POST", server.PathRestore, server.RestoreRequest{Path: servedPath(args[0])}, &out); err != nil {
				return fmt.Errorf("restore %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s from %s\n", out.Restored, out.Path)
			return nil
		},
	}
}
