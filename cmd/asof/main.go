// Command asof is the asof file server and its admin tool.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "asof:", err)
		os.Exit(1)
	}
}

// globals are the flags every command shares.
type globals struct {
	configFile string
	logFormat  string
}

func rootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "asof",
		Short: "A file server whose storage never forgets",
		Long: `asof serves one store over NFSv3 and 9P2000.L. Every change is kept:
name@@WHEN opens any file or directory as it stood at that moment.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.configFile, "config", "", "config file (YAML, TOML or JSON)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(serveCmd(g), historyCmd(g), cloneCmd(g), restoreCmd(g), statsCmd(g), pruneCmd(g), verifyCmd(g), volumeCmd(g), mirrorCmd(g))
	return root
}
