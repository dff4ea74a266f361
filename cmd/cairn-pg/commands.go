package main

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/blockdiff"
	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/repocli"
	"github.com/cairn-backup/cairn/pgdump"
)

func (a *app) dumpCmd() *cobra.Command {
	var opts pgdump.DumpOptions
	var mode string
	var labels []string
	cmd := &cobra.Command{
		Use:   "dump [--dsn DSN] [--mode dumpall|per-database] [--database DB]... [--cluster NAME] [--label k=v]... [--json] [-- TOOL-ARGS...]",
		Short: "Stream pg_dumpall (or pg_dump -Fc per database) into a new version",
		Long: "dump runs pg_dumpall (default) or, with --mode per-database, pg_dumpall --globals-only and\n" +
			"pg_dump -Fc for each database, streaming their output into stream versions named\n" +
			"--volume (default pg-CLUSTER), VOLUME.globals and VOLUME/DATABASE. A tool that fails leaves\n" +
			"no valid version; the error ends with the tail of its stderr. Arguments after -- go to the tool.",
		Args: cli.Args(cobra.ArbitraryArgs),
		RunE: func(cmd *cobra.Command, extra []string) error {
			if cmd.ArgsLenAtDash() != 0 && len(extra) > 0 {
				return cli.Usagef("unexpected argument %q (tool arguments go after --)", extra[0])
			}
			lm, err := repocli.ParseLabels(labels)
			if err != nil {
				return err
			}
			switch pgdump.Mode(mode) {
			case pgdump.ModeDumpAll, pgdump.ModePerDatabase:
			default:
				return cli.Usagef("--mode %q: want dumpall or per-database", mode)
			}
			if mode == string(pgdump.ModeDumpAll) && len(opts.Databases) > 0 {
				return cli.Usagef("--database needs --mode per-database")
			}
			opts.Mode, opts.Labels, opts.Args, opts.Logger = pgdump.Mode(mode), lm, extra, a.Log
			opts.Conn = a.conn(a.dsnOrEnv())
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				bar := a.NewProgress("dump")
				opts.Progress = func(program string, done int64) { bar.Update(program, done, 0) }
				vs, err := pgdump.Dump(cmd.Context(), r, opts)
				bar.Finish()
				for _, v := range vs {
					a.RecordVersion(v)
				}
				if a.JSON {
					if jerr := a.WriteJSON(repocli.VersionsJSON(vs)); jerr != nil && err == nil {
						err = jerr
					}
				} else {
					for _, v := range vs {
						fmt.Fprintf(a.IO.Out, "%s %s %s dumped, %s new stored\n", v.ID, v.Volume,
							cli.HumanBytes(v.Size), cli.HumanBytes(v.Stats.BytesWritten))
					}
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.dsn, "dsn", "", "libpq connection string (default $CAIRN_PG_DSN, else the libpq environment)")
	f.StringVar(&mode, "mode", string(pgdump.ModeDumpAll), "dumpall or per-database")
	f.StringArrayVar(&opts.Databases, "database", nil, "with --mode per-database: dump only this database (repeatable)")
	f.StringVar(&opts.Cluster, "cluster", "postgres", "cluster name, in labels and the default volume name")
	f.StringVar(&opts.Volume, "volume", "", "version name (default pg-CLUSTER)")
	f.StringArrayVar(&labels, "label", nil, "label k=v for the versions (repeatable)")
	return cmd
}

// dsnOrEnv is --dsn, else $CAIRN_PG_DSN (else "": the libpq environment).
func (a *app) dsnOrEnv() string {
	if a.dsn != "" {
		return a.dsn
	}
	return a.IO.Getenv("CAIRN_PG_DSN")
}

// reportJSON is restore's --json output.
type reportJSON struct {
	Version string   `json:"version"`
	Program string   `json:"program"`
	Errors  []string `json:"errors"`
	Benign  int      `json:"benign_errors"`
	Error   string   `json:"error,omitempty"`
}

func (a *app) restoreCmd() *cobra.Command {
	var to, database, superuser string
	var strict, verify bool
	cmd := &cobra.Command{
		Use:   "restore VERSION [--to -] | [--target-dsn DSN [--database DB] [--strict]] | [--verify --target-dsn DSN]",
		Short: "Stream a dump to stdout, or load it into psql / pg_restore",
		Long: "restore writes the dump to stdout (--to -, the default without --target-dsn), or loads it\n" +
			"into the server of --target-dsn ($CAIRN_PG_TARGET_DSN): plain dumps through psql, custom ones\n" +
			"through pg_restore into --database. --strict fails on any error the load reports (except that\n" +
			"a role exists). --verify loads a per-database dump into a scratch database it creates on\n" +
			"--target-dsn and drops; a cluster dump (pg_dumpall) into a scratch cluster it starts with\n" +
			"initdb and pg_ctl from --bindir and removes (or into --target-dsn, a throwaway server).",
		Args: cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, as []string) error {
			id := as[0]
			target := a.dsn
			if target == "" {
				target = a.IO.Getenv("CAIRN_PG_TARGET_DSN")
			}
			toServer := target != "" || verify || database != ""
			if toServer && to != "" {
				return cli.Usagef("--to and --target-dsn/--verify/--database exclude each other")
			}
			if verify && database != "" {
				return cli.Usagef("--verify chooses its own scratch database")
			}
			return a.WithRepo(cmd.Context(), func(r *blockdiff.Repository) error {
				if !toServer {
					var w io.Writer = a.IO.Out
					if to != "" && to != "-" {
						f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
						if err != nil {
							return err
						}
						defer f.Close()
						w = f
					}
					bar := a.NewProgress("restore " + id)
					err := r.RestoreStream(cmd.Context(), id, w, blockdiff.StreamRestoreOptions{
						Progress: func(done, total int64) { bar.Bytes(done, total) }})
					bar.Finish()
					return err
				}
				conn := a.conn(target)
				bar := a.NewProgress("restore " + id)
				var rep *pgdump.Report
				var err error
				if verify {
					rep, err = pgdump.Verify(cmd.Context(), r, id, pgdump.VerifyOptions{Conn: conn, Superuser: superuser, Logger: a.Log})
				} else {
					rep, err = pgdump.Restore(cmd.Context(), r, id, pgdump.RestoreOptions{Conn: conn, Database: database,
						Strict: strict, Logger: a.Log, Progress: func(done, total int64) { bar.Bytes(done, total) }})
				}
				bar.Finish()
				if a.JSON && rep != nil {
					out := reportJSON{Version: id, Program: rep.Program, Errors: rep.Errors, Benign: rep.Benign}
					if out.Errors == nil {
						out.Errors = []string{}
					}
					if err != nil {
						out.Error = err.Error()
					}
					if jerr := a.WriteJSON(out); jerr != nil && err == nil {
						err = jerr
					}
				} else if rep != nil && len(rep.Errors) > rep.Benign {
					for _, e := range rep.Errors {
						fmt.Fprintln(a.IO.Err, rep.Program+":", e)
					}
				}
				if err == nil && verify {
					a.Log.Info("verified: the dump loads without errors", "version", id)
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "write the dump to this new file, or - for stdout")
	f.StringVar(&a.dsn, "target-dsn", "", "load into this server (default $CAIRN_PG_TARGET_DSN)")
	f.StringVar(&database, "database", "", "database to connect to / restore a custom dump into")
	f.BoolVar(&strict, "strict", false, "fail when the load reports errors")
	f.BoolVar(&verify, "verify", false, "load into a scratch database or cluster and check that it loads without errors")
	f.StringVar(&superuser, "superuser", "postgres", "with --verify of a cluster dump: the scratch cluster's superuser (the dump's role)")
	return cmd
}

// printDumps is cairn-pg's ls table: dumps with their server and databases.
func printDumps(w io.Writer, vs []*blockdiff.Version) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVOLUME\tCREATED\tSIZE\tNEW\tSTATUS\tSERVER\tDATABASES")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Volume, v.Created.Local().Format(time.DateTime),
			cli.HumanBytes(v.Size), cli.HumanBytes(v.Stats.BytesWritten), v.Status,
			v.Labels[pgdump.LabelServerVersion], v.Labels[pgdump.LabelDatabases])
	}
	return tw.Flush()
}
