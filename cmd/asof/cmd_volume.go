package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/asof/asof/server"
)

func volumeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "List, add, drain and remove the volumes data blocks live on",
		Long: `Data blocks live on volumes: the data directory (volume "data"), other
directories, and S3-compatible buckets. Packs are filled in the data
directory; once sealed each goes to a volume by the placement rule that
asof volume list shows. All of this works while the server serves.`,
	}
	cmd.AddCommand(volumeListCmd(g), volumeAddCmd(g), volumeDrainCmd(g), volumeRemoveCmd(g))
	return cmd
}

func volumeListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "Show each volume: name, kind, state, bytes, packs; the placement rule; the S3 read cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var out server.VolumesReply
			if err := c.call("GET", server.PathVolumes, nil, &out); err != nil {
				return fmt.Errorf("volume list: %w", err)
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
			}
			printVolumes(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printVolumes(w io.Writer, out server.VolumesReply) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSTATE\tBYTES\tPACKS\tFREE\tWHERE")
	for _, v := range out.Volumes {
		free := fmt.Sprint(v.Free)
		if v.Free < 0 {
			free = "unbounded"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", v.Name, v.Kind, v.State, v.Bytes, v.Packs, free, v.Where)
	}
	tw.Flush()
	for _, v := range out.Volumes {
		if v.Problem != "" {
			fmt.Fprintf(w, "%s: %s\n", v.Name, v.Problem)
		}
	}
	fmt.Fprintf(w, "placement: %s\n", out.Placement)
	if c := out.Cache; c != nil {
		fmt.Fprintf(w, "S3 read cache: %d of %d bytes used (%s); %d hits, %d misses, %d evictions, %d damaged\n",
			c.Used, c.Max, c.Dir, c.Hits, c.Misses, c.Evictions, c.Damaged)
	}
}

func volumeAddCmd(g *globals) *cobra.Command {
	var req server.VolumeAddRequest
	cmd := &cobra.Command{
		Use:   "add NAME DIR | add NAME s3://BUCKET/PREFIX --endpoint URL [--region R] [--credentials-file F]",
		Short: "Add a directory or an S3 bucket as a volume",
		Long: `Add a volume: a directory (which must exist), or a bucket (with an optional
prefix) on an S3-compatible store. The volume is reached and labelled as this
store's; a volume of another store is refused. S3 credentials are the server's
(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment), or
--credentials-file, a file the server reads.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name, req.Where = args[0], args[1]
			if !strings.HasPrefix(req.Where, "s3://") {
				abs, err := filepath.Abs(req.Where)
				if err != nil {
					return err
				}
				req.Where = abs
			}
			if req.CredentialsFile != "" {
				abs, err := filepath.Abs(req.CredentialsFile)
				if err != nil {
					return err
				}
				req.CredentialsFile = abs
			}
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var out server.VolumesReply
			if err := c.call("POST", server.PathVolumeAdd, req, &out); err != nil {
				return fmt.Errorf("volume add: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added volume %s\n", req.Name)
			printVolumes(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Endpoint, "endpoint", "", "the S3 store's URL, http://host:port or https://host")
	cmd.Flags().StringVar(&req.Region, "region", "", "the bucket's region (default us-east-1)")
	cmd.Flags().StringVar(&req.CredentialsFile, "credentials-file", "", "an AWS shared credentials file the server reads")
	return cmd
}

func volumeDrainCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "drain NAME",
		Short: "Move everything a volume holds to the other volumes",
		Long: `Move every pack the volume holds to the other writable volumes, pack by pack,
with progress in bytes. From now on the volume takes no new packs. Stopped
(the command interrupted, the server killed), the drain goes on where it
stopped: in the background once the server runs, or when run again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out server.VolumesReply
			if err := streamCall(g, cmd, "volume drain", server.PathVolumeDrain, server.VolumeRequest{Name: args[0]}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "drained volume %s\n", args[0])
			printVolumes(cmd.OutOrStdout(), out)
			return nil
		},
	}
}

func volumeRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Forget a drained, empty volume",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			var out server.VolumesReply
			if err := c.call("POST", server.PathVolumeRemove, server.VolumeRequest{Name: args[0]}, &out); err != nil {
				return fmt.Errorf("volume remove: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed volume %s\n", args[0])
			printVolumes(cmd.OutOrStdout(), out)
			return nil
		},
	}
}
