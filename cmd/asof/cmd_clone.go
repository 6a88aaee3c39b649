package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/asof/asof/server"
)

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
			var out server.CloneReply
			if err := c.call("POST", server.PathClone, server.CloneRequest{Src: servedPath(args[0]), Dst: servedPath(args[1])}, &out); err != nil {
				return fmt.Errorf("clone %s %s: %w", args[0], args[1], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cloned %s to %s\n", out.Src, out.Dst)
			return nil
		},
	}
}
