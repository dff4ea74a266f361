// Command cairn-zrepl replaces zrepl: it replicates ZFS filesystems from a
// push job to a sink over mutual TLS (or TCP), reading zrepl's configuration
// format.
//
//	cairn-zrepl daemon                       run every push, sink and snap job
//	cairn-zrepl status [--json]              each job's state from the running daemon
//	cairn-zrepl signal wakeup JOB            replicate and prune a push job now
//	cairn-zrepl signal reset JOB             abort a job's running run
//	cairn-zrepl configcheck [--strict]       validate a configuration
//	cairn-zrepl replicate JOB [--json]       one replication round of a push job
//	cairn-zrepl serve JOB                    run a sink job in the foreground
//	cairn-zrepl version                      the binary's version
//
// Every command reads the configuration named by --config, by default
// $CAIRN_ZREPL_CONFIG, else /etc/zrepl/zrepl.yml (zrepl's default path).
// status and signal read only its global.control.sockpath: without an
// explicit --config (or $CAIRN_ZREPL_CONFIG) and with no file at the default
// path they use zrepl's default socket, /var/run/zrepl/control.
//
// The global flags are those of every cairn binary (internal/cli):
// --log-level, --log-format, --json, --progress-interval. The daemon logs
// as global.logging's first stdout outlet says unless --log-level or
// --log-format is given.
//
// Exit codes:
//
//	0    success; also daemon and serve stopped by SIGINT or SIGTERM (their normal end)
//	1    failure: a filesystem failed or conflicted, no daemon on the control socket, a server error;
//	     configcheck --strict on a configuration with keys cairn accepts but ignores
//	2    usage: bad flags or arguments, an invalid or unreadable configuration, a job of the wrong type
//	130  interrupted: SIGINT or SIGTERM ended a command other than daemon and serve
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
)

// DefaultConfig is where the configuration is read without --config or
// $CAIRN_ZREPL_CONFIG: zrepl's default path.
const DefaultConfig = "/etc/zrepl/zrepl.yml"

// exitCodesHelp is the exit-code table of --help: the codes cairn-zrepl
// uses among internal/cli's.
const exitCodesHelp = `Exit codes:
  0    success; also daemon and serve stopped by SIGINT or SIGTERM (their normal end)
  1    failure (a filesystem failed or conflicted, no daemon on the control
       socket, a server error; configcheck --strict on ignored keys)
  2    usage error (bad flag or argument, an invalid or unreadable
       configuration, a job of the wrong type; nothing ran)
  130  interrupted (SIGINT, SIGTERM) a command other than daemon and serve`

// jobEnv builds the jobs of replicate, serve and daemon: the zero Env (the
// local zfs command, the configuration's transports); tests replace it.
var jobEnv daemon.Env

func main() { cli.Main(run) }

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, sio cli.IO) int {
	if sio.Getenv == nil {
		sio.Getenv = func(string) string { return "" }
	}
	a := &app{App: cli.App{IO: sio}}
	_, code := a.Execute(ctx, a.newRoot(), args)
	return code
}

// app is cairn-zrepl's command line: the shared flags and --config.
type app struct {
	cli.App
	configPath string // --config
	root       *cobra.Command
}

func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "cairn-zrepl",
		Short: "ZFS replication compatible with zrepl's push, sink and snap jobs",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return a.Setup()
		},
	}
	a.root = root
	a.AddFlags(root)
	root.Long = root.Short + "\n\n" + exitCodesHelp
	def := a.IO.Getenv("CAIRN_ZREPL_CONFIG")
	if def == "" {
		def = DefaultConfig
	}
	root.PersistentFlags().StringVar(&a.configPath, "config", def,
		"configuration file in zrepl's format ($CAIRN_ZREPL_CONFIG when set)")
	root.AddCommand(a.newReplicate(), a.newServe(), a.newDaemon(), a.newStatus(), a.newSignal(), a.newConfigcheck(), a.VersionCmd())
	return root
}

// configExplicit reports whether the configuration was named (--config or
// $CAIRN_ZREPL_CONFIG) rather than defaulted.
func (a *app) configExplicit() bool {
	return a.root.PersistentFlags().Changed("config") || a.IO.Getenv("CAIRN_ZREPL_CONFIG") != ""
}

// loadConfig loads the configuration; its errors are usage errors.
func (a *app) loadConfig() (*config.Config, error) {
	if a.configPath == "" {
		return nil, cli.Usagef("--config is empty")
	}
	c, err := config.Load(a.configPath)
	if err != nil {
		return nil, cli.UsageError{Err: err}
	}
	return c, nil
}

// loadJob loads the configuration and returns its job name of type typ.
func (a *app) loadJob(name, typ string) (*config.Job, error) {
	c, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	j, err := c.Job(name)
	if err != nil {
		return nil, cli.UsageError{Err: err}
	}
	if j.Type != typ {
		return nil, cli.Usagef("job %q is a %s job, not %s", name, j.Type, typ)
	}
	return j, nil
}

func (a *app) newReplicate() *cobra.Command {
	return &cobra.Command{
		Use:   "replicate JOB",
		Short: "Run one replication round of a push job and print a per-filesystem report",
		Long: "Run one replication round of a push job (no snapshot is taken, nothing is pruned) " +
			"as the daemon does, send.bandwidth_limit included, and print a per-filesystem report.",
		Args: cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := a.loadJob(args[0], "push")
			if err != nil {
				return err
			}
			p, err := jobEnv.BuildPush(j, a.Log)
			if err != nil {
				return err
			}
			defer p.Close()
			rep := p.Replicate(cmd.Context(), a.Log, nil)
			if a.JSON {
				if err := a.WriteJSON(rep); err != nil {
					return err
				}
			} else {
				printReport(a.IO.Out, rep)
			}
			if err := rep.Err(); err != nil {
				return fmt.Errorf("replication of job %s failed: %w", j.Name, err)
			}
			return nil
		},
	}
}

func printReport(w io.Writer, rep *zfsrepl.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILESYSTEM\tSTATE\tSTEPS\tBYTES\tDURATION\tERROR")
	for _, f := range rep.Filesystems {
		var d time.Duration
		for _, s := range f.Steps {
			d += s.Duration
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", f.Filesystem, f.State, len(f.Steps), f.Bytes, d.Round(time.Millisecond), oneLine(f.Error))
	}
	tw.Flush()
	if rep.Error != "" {
		fmt.Fprintln(w, "error:", rep.Error)
	}
}

func (a *app) newServe() *cobra.Command {
	return &cobra.Command{
		Use:   "serve JOB",
		Short: "Run a sink job in the foreground until SIGINT or SIGTERM",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := a.loadJob(args[0], "sink")
			if err != nil {
				return err
			}
			log := a.Log.With("job", j.Name)
			sink, err := jobEnv.BuildSink(j, log)
			if err != nil {
				return err
			}
			log.Info("sink serving", "listen", sink.Listener.Addr().String(), "root_fs", j.RootFS)
			return sink.Serve(cmd.Context(), 30*time.Second)
		},
	}
}

// daemonLogger returns the daemon's logger: global.logging's first stdout
// outlet (as zrepl, on stdout) unless --log-level or --log-format was given,
// else the shared one.
func (a *app) daemonLogger(c *config.Config) *slog.Logger {
	pf := a.root.PersistentFlags()
	if len(c.Global.Logging) == 0 || pf.Changed("log-level") || pf.Changed("log-format") {
		return a.Log
	}
	l := c.Global.Logging[0]
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		lv = slog.LevelInfo
	}
	o := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(a.IO.Out, o))
	}
	return slog.New(slog.NewTextHandler(a.IO.Out, o))
}

// controlSocket returns --socket, or global.control.sockpath of the
// configuration; without a named configuration and with no file at the
// default path, zrepl's default socket.
func (a *app) controlSocket(sock string) (string, error) {
	if sock != "" {
		return sock, nil
	}
	if !a.configExplicit() {
		if _, err := os.Stat(a.configPath); errors.Is(err, fs.ErrNotExist) {
			return config.DefaultControlSocket, nil
		}
	}
	c, err := a.loadConfig()
	if err != nil {
		return "", err
	}
	return c.Global.ControlSocket, nil
}
