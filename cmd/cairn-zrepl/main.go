// Command cairn-zrepl replaces zrepl: it replicates ZFS filesystems from a
// push job to a sink over mutual TLS (or TCP), reading zrepl's configuration
// format.
//
//	cairn-zrepl daemon --config FILE                   run every push, sink and snap job
//	cairn-zrepl status [--json] [--config FILE]        each job's state from the running daemon
//	cairn-zrepl signal wakeup JOB [--config FILE]      replicate and prune a push job now
//	cairn-zrepl signal reset JOB [--config FILE]       abort a job's running run
//	cairn-zrepl configcheck --config FILE              validate a configuration
//	cairn-zrepl replicate --config FILE JOB [--json]   one replication round of a push job
//	cairn-zrepl serve --config FILE JOB                run a sink job in the foreground
//
// Exit codes: 0 ok, 1 failure (a filesystem failed or conflicted, a server
// error), 2 usage (bad flags or arguments, an invalid configuration, a job of
// the wrong type).
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

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
)

// jobEnv builds the jobs of replicate, serve and daemon: the zero Env (the
// local zfs command, the configuration's transports); tests replace it.
var jobEnv daemon.Env

// usageError marks errors that exit with code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "cairn-zrepl:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "cairn-zrepl",
		Short:         "ZFS replication compatible with zrepl's push/sink jobs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	logger := func() *slog.Logger {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(logLevel)); err != nil {
			lv = slog.LevelWarn
		}
		return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	}
	root.AddCommand(newReplicate(stdout, logger), newServe(logger), newDaemon(stdout, logger),
		newStatus(stdout), newSignal(), newConfigcheck(stdout))
	return root
}

func loadJob(path, name, typ string) (*config.Job, error) {
	if path == "" {
		return nil, usageError{errors.New("--config is required")}
	}
	c, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	j, err := c.Job(name)
	if err != nil {
		return nil, usageError{err}
	}
	if j.Type != typ {
		return nil, usageError{fmt.Errorf("job %q is a %s job, not %s", name, j.Type, typ)}
	}
	return j, nil
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func newReplicate(stdout io.Writer, logger func() *slog.Logger) *cobra.Command {
	var cfgPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "replicate --config FILE JOB",
		Short: "run one replication round of a push job and print a per-filesystem report",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := loadJob(cfgPath, args[0], "push")
			if err != nil {
				return err
			}
			log := logger()
			p, err := jobEnv.BuildPush(j, log)
			if err != nil {
				return err
			}
			defer p.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep := p.Replicate(ctx, log, nil)
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printReport(stdout, rep)
			}
			if err := rep.Err(); err != nil {
				return fmt.Errorf("replication of job %s failed", j.Name)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file (zrepl format)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printReport(w io.Writer, rep *zfsrepl.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILESYSTEM\tSTATE\tSTEPS\tBYTES\tDURATION\tERROR")
	for _, f := range rep.Filesystems {
		var d time.Duration
		for _, s := range f.Steps {
			d += s.Duration
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", f.Filesystem, f.State, len(f.Steps), f.Bytes, d.Round(time.Millisecond), f.Error)
	}
	tw.Flush()
	if rep.Error != "" {
		fmt.Fprintln(w, "error:", rep.Error)
	}
}

func newServe(logger func() *slog.Logger) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve --config FILE JOB",
		Short: "run a sink job in the foreground until interrupted",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := loadJob(cfgPath, args[0], "sink")
			if err != nil {
				return err
			}
			log := logger().With("job", j.Name)
			sink, err := jobEnv.BuildSink(j, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log.Info("sink serving", "listen", sink.Listener.Addr().String(), "root_fs", j.RootFS)
			return sink.Serve(ctx, 30*time.Second)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file (zrepl format)")
	return cmd
}
