package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/asof/asof/config"
	"github.com/asof/asof/server"
)

func newLogger(format string) (*slog.Logger, error) {
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not a log format (use text or json)", format)
}

func serveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the store over NFSv3 and 9P2000.L",
		Args:  cobra.NoArgs,
	}
	config.RegisterFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := newLogger(g.logFormat)
		if err != nil {
			return err
		}
		cfg, err := config.Load(g.configFile, cmd.Flags())
		if err != nil {
			return err
		}
		slog.SetDefault(log)
		srv, err := server.Start(cfg, log)
		if err != nil {
			return err
		}
		sig := make(chan os.Signal, 2)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		s := <-sig
		log.Info("stopping: no new clients; committing what is buffered", "signal", s.String())
		go func() {
			// A second signal stops at once. Nothing acknowledged is lost:
			// what a client was told is stable is in the intent log.
			s := <-sig
			log.Warn("second signal: exiting now; the next start replays the intent log", "signal", s.String())
			os.Exit(1)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	}
	return cmd
}
