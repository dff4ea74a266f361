package daemon_test

import (
	"context"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cairn-backup/cairn/zfsrepl/config"
	"github.com/cairn-backup/cairn/zfsrepl/daemon"
)

// The daemon runs every job of a zrepl configuration (push, sink, snap) with
// the real ZFS, transports and clock (the zero Env) until SIGTERM, serving
// status, wakeup and reset on the control socket that `cairn-zrepl status`
// and `signal` use. (Compile-only: it needs ZFS.)
func Example() {
	cfg, err := config.Load("/etc/zrepl/zrepl.yml")
	if err != nil {
		log.Fatal(err)
	}
	d, err := daemon.New(cfg, daemon.Env{}, slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := d.Run(ctx, "/var/run/zrepl/control"); err != nil {
		log.Fatal(err)
	}
}
