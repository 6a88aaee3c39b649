package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/asof/asof/config"
	"github.com/asof/asof/history"
	"github.com/asof/asof/server"
)

func verifyCmd(g *globals) *cobra.Command {
	var offline, deep bool
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
			} else if err := streamCall(g, cmd, "verify", server.PathVerify, server.VerifyRequest{Deep: deep}, &r); err != nil {
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
	cmd.Flags().BoolVar(&deep, "deep", false, "read and check every block of S3 volumes too (by default each pack is checked to be there, whole)")
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
