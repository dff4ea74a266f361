package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
)

// loadConfig loads --config; errors are usage errors.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usageError{errors.New("--config is required")}
	}
	c, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// configLogger returns the logger of global.logging (the first stdout
// outlet), or fallback when there is none.
func configLogger(c *config.Config, w io.Writer, fallback *slog.Logger) *slog.Logger {
	g := c.Global
	if len(g.Logging) == 0 {
		return fallback
	}
	l := g.Logging[0]
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		lv = slog.LevelInfo
	}
	o := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

func newDaemon(stdout io.Writer, logger func() *slog.Logger) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "daemon --config FILE",
		Short: "run every push, sink and snap job of the configuration until SIGINT or SIGTERM",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			g := c.Global
			log := configLogger(c, stdout, logger())
			d, err := daemon.New(c, jobEnv, log)
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log.Info("daemon starting", "config", cfgPath, "jobs", len(c.Jobs), "control", g.ControlSocket)
			return d.Run(ctx, g.ControlSocket)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file (zrepl format)")
	return cmd
}

// controlSocket returns --socket, or global.control.sockpath of --config.
func controlSocket(sock, cfgPath string) (string, error) {
	if sock != "" {
		return sock, nil
	}
	if cfgPath == "" {
		return config.DefaultControlSocket, nil
	}
	c, err := loadConfig(cfgPath)
	if err != nil {
		return "", err
	}
	return c.Global.ControlSocket, nil
}

func newStatus(stdout io.Writer) *cobra.Command {
	var cfgPath, sock string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json] [--config FILE | --socket PATH]",
		Short: "print each job's state, last run, bytes and errors from a running daemon",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := controlSocket(sock, cfgPath)
			if err != nil {
				return err
			}
			st, err := daemon.NewControl(path).Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(stdout, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file whose global.control.sockpath to use")
	cmd.Flags().StringVar(&sock, "socket", "", "control socket path (default: from --config, else "+config.DefaultControlSocket+")")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printStatus(w io.Writer, st []daemon.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tTYPE\tSTATE\tRUNS\tLAST RUN\tLAST SUCCESS\tBYTES\tPRUNED\tERRORS\tLAST ERROR")
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, s := range st {
		pruned := 0
		for _, n := range s.Pruned {
			pruned += n
		}
		state := s.State
		if s.StepBytes > 0 {
			state = fmt.Sprintf("%s (%d bytes)", state, s.StepBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", s.Name, s.Type, state, s.Runs, ts(s.LastEnd), ts(s.LastSuccess), s.Bytes, pruned, s.Errors, s.LastError)
	}
	tw.Flush()
}

func newSignal() *cobra.Command {
	var cfgPath, sock string
	cmd := &cobra.Command{
		Use: "signal wakeup|reset JOB [--config FILE | --socket PATH]",
		Short: "wakeup: a push job replicates and prunes now (no snapshot is taken); " +
			"reset: abort the job's running run (the next run resumes its step)",
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "wakeup" && args[0] != "reset" {
				return usageError{fmt.Errorf("unknown signal %q (wakeup, reset)", args[0])}
			}
			path, err := controlSocket(sock, cfgPath)
			if err != nil {
				return err
			}
			ctl := daemon.NewControl(path)
			if args[0] == "wakeup" {
				return ctl.Wakeup(cmd.Context(), args[1])
			}
			aborted, err := ctl.Reset(cmd.Context(), args[1])
			if err == nil && !aborted {
				fmt.Fprintf(cmd.OutOrStdout(), "job %s: no run to abort\n", args[1])
			}
			return err
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file whose global.control.sockpath to use")
	cmd.Flags().StringVar(&sock, "socket", "", "control socket path")
	return cmd
}

func newConfigcheck(stdout io.Writer) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "configcheck --config FILE",
		Short: "load and validate a configuration; errors name the key and its line",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			for _, j := range c.Jobs {
				fmt.Fprintf(stdout, "job %s: %s\n", j.Name, j.Type)
			}
			fmt.Fprintln(stdout, "configuration ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file (zrepl format)")
	return cmd
}
