package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
)

func (a *app) newDaemon() *cobra.Command {
	return &cobra.Command{
		Use:   "daemon",
		Short: "Run every push, sink and snap job of the configuration until SIGINT or SIGTERM",
		Long: "Run every push, sink and snap job of the configuration until SIGINT or SIGTERM " +
			"(then exit 0), serving status and signal on global.control.sockpath and metrics on " +
			"global.monitoring's listeners. Logs go where global.logging's first stdout outlet says " +
			"unless --log-level or --log-format is given.",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.loadConfig()
			if err != nil {
				return err
			}
			log := a.daemonLogger(c)
			for _, i := range c.Ignored {
				log.Warn("configuration key ignored", "line", i.Line, "job", i.Job, "key", i.Key, "reason", i.Reason)
			}
			d, err := daemon.New(c, jobEnv, log)
			if err != nil {
				return cli.UsageError{Err: err}
			}
			log.Info("daemon starting", "config", a.configPath, "jobs", len(c.Jobs), "control", c.Global.ControlSocket)
			return d.Run(cmd.Context(), c.Global.ControlSocket)
		},
	}
}

func (a *app) newStatus() *cobra.Command {
	var sock string
	cmd := &cobra.Command{
		Use:   "status [--json] [--socket PATH]",
		Short: "Print each job's state, last run, bytes and errors from a running daemon",
		Long: "Print each job's state, last run, bytes and errors from a running daemon. The table " +
			"shows the first line of a multi-line last error, followed by (…); --json has the whole text.",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := a.controlSocket(sock)
			if err != nil {
				return err
			}
			st, err := daemon.NewControl(path).Status(cmd.Context())
			if err != nil {
				return err
			}
			if a.JSON {
				return a.WriteJSON(st)
			}
			printStatus(a.IO.Out, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&sock, "socket", "", "control socket path (default: global.control.sockpath of --config, else "+config.DefaultControlSocket+")")
	return cmd
}

// oneLine returns text fit for one table cell: its first non-empty line,
// control characters (tabs) as spaces, followed by " (…)" when more lines
// follow.
func oneLine(text string) string {
	first, rest, _ := strings.Cut(strings.TrimSpace(text), "\n")
	first = strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, first))
	if strings.TrimSpace(rest) != "" {
		first += " (…)"
	}
	return first
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", oneLine(s.Name), oneLine(s.Type), oneLine(state), s.Runs,
			ts(s.LastEnd), ts(s.LastSuccess), s.Bytes, pruned, s.Errors, oneLine(s.LastError))
	}
	tw.Flush()
}

func (a *app) newSignal() *cobra.Command {
	var sock string
	cmd := &cobra.Command{
		Use: "signal wakeup|reset JOB [--socket PATH]",
		Short: "wakeup: a push job replicates and prunes now (no snapshot is taken); " +
			"reset: abort the job's running run (the next run resumes its step)",
		Args: cli.Args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "wakeup" && args[0] != "reset" {
				return cli.Usagef("unknown signal %q (wakeup, reset)", args[0])
			}
			path, err := a.controlSocket(sock)
			if err != nil {
				return err
			}
			ctl := daemon.NewControl(path)
			if args[0] == "wakeup" {
				return ctl.Wakeup(cmd.Context(), args[1])
			}
			aborted, err := ctl.Reset(cmd.Context(), args[1])
			if err == nil && !aborted {
				fmt.Fprintf(a.IO.Out, "job %s: no run to abort\n", args[1])
			}
			return err
		},
	}
	cmd.Flags().StringVar(&sock, "socket", "", "control socket path (default: global.control.sockpath of --config, else "+config.DefaultControlSocket+")")
	return cmd
}

// configcheckJSON is configcheck's --json result.
type configcheckJSON struct {
	Jobs    []configcheckJob `json:"jobs"`
	Ignored []config.Ignored `json:"ignored"`
}

type configcheckJob struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Line int    `json:"line"`
}

func (a *app) newConfigcheck() *cobra.Command {
	var strict bool
	cmd := &cobra.Command{
		Use:   "configcheck [--strict]",
		Short: "Load and validate a configuration; errors name the key and its line",
		Long: "Load and validate a configuration: an invalid one exits 2 with an error naming the key " +
			"and its line. Keys zrepl documents that cairn accepts but does not act on " +
			"(replication.protection, recv.placeholder.encryption, a key that does not apply to the " +
			"job's type, ...) are warned about on stderr, each with its line; with --strict they " +
			"make configcheck fail (exit 1).",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.loadConfig()
			if err != nil {
				return err
			}
			if a.JSON {
				out := configcheckJSON{Jobs: []configcheckJob{}, Ignored: c.Ignored}
				if out.Ignored == nil {
					out.Ignored = []config.Ignored{}
				}
				for _, j := range c.Jobs {
					out.Jobs = append(out.Jobs, configcheckJob{Name: j.Name, Type: j.Type, Line: j.Line})
				}
				if err := a.WriteJSON(out); err != nil {
					return err
				}
			} else {
				for _, j := range c.Jobs {
					fmt.Fprintf(a.IO.Out, "job %s: %s\n", j.Name, j.Type)
				}
			}
			for _, i := range c.Ignored {
				fmt.Fprintf(a.IO.Err, "warning: %s\n", i)
			}
			if strict && len(c.Ignored) > 0 {
				return fmt.Errorf("%s: %d key(s) accepted but ignored (--strict)", a.configPath, len(c.Ignored))
			}
			if !a.JSON {
				if len(c.Ignored) > 0 {
					fmt.Fprintf(a.IO.Out, "configuration ok, %d key(s) ignored\n", len(c.Ignored))
				} else {
					fmt.Fprintln(a.IO.Out, "configuration ok")
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&strict, "strict", false, "fail (exit 1) when the configuration sets keys cairn accepts but ignores")
	return cmd
}
