// Command cairn-pg backs up PostgreSQL into a blockdiff repository by
// streaming pg_dumpall (or pg_dump -Fc per database) straight into a
// deduplicated stream version, replacing the seed's Velero pre-hook, file
// system backup and post-hook. No dump file touches disk.
//
//	cairn-pg dump    --repo URL [--dsn DSN] [--mode dumpall|per-database] [--database DB]... [--cluster NAME] [--label k=v]... [--json] [-- TOOL-ARGS]
//	cairn-pg restore --repo URL VERSION [--to -] | [--target-dsn DSN [--database DB] [--strict]] | [--verify --target-dsn DSN]
//	cairn-pg ls      --repo URL [--cluster NAME] [--volume V] [--label k=v]... [--json]
//	cairn-pg enforce --repo URL RULES [--cluster NAME] [--volume V] [--dry-run] [--json]
//	cairn-pg cleanup --repo URL [--grace DURATION] [--dry-run] [--json]
//
// --repo defaults to $CAIRN_REPO; the passphrase of an encrypted repository
// comes from $CAIRN_PASSWORD or --password-file. The server is reached with
// the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, ...) and,
// optionally, a connection string from --dsn or $CAIRN_PG_DSN (prefer the
// variable: a password in a flag is visible to ps); passwords are handed to
// the tools in PGPASSWORD and never logged. --bindir or $PG_BINDIR says
// where pg_dumpall, pg_dump, psql and pg_restore are (default: $PATH).
// Exit codes: 0 success, 1 failure, 2 usage error, 3 partial (backup-all:
// some volumes failed), 10 no repository, 11 locked, 12 wrong passphrase,
// 130 interrupted.
package main

import (
	"github.com/cairn-backup/cairn/internal/cli"
	_ "github.com/cairn-backup/cairn/objstore/s3" // registers s3:// for --repo
)

func main() { cli.Main(run) }
