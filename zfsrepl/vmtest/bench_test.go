package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/zfsrepl"
)

// BenchmarkIncremental256MiB compares, in the same run and on the same
// snapshots, a 256 MiB incremental replicated over the mutual-TLS transport
// (zstd on the wire) with `zfs send -i | zfs recv` piped locally. Each
// iteration replaces the previous one's file with 256 MiB of new
// incompressible data, snapshots, sends the same incremental both ways
// (alternating which goes first), then destroys the previous snapshots and
// trims the pools, so that the 1 GiB pools (one per copy) hold any number of
// iterations. Each pool holds two iterations at its peak, on the guest's
// tmpfs: give the guest ZFSVM_MEM=8192 for -benchtime above 1x.
//
// Metrics: pipe-MB/s (local pipe), tls-MB/s (the stream alone: zfs send start
// to the sink's acknowledgement), tls-round-MB/s (the whole replication
// round: listings, holds, cursor), tls/pipe-% (stream vs pipe), and
// tcp-MB/s (the same stream over the plain TCP transport, measured after).
func BenchmarkIncremental256MiB(b *testing.B) {
	pools(b)
	testenv.ZPool(b, "pipe") // each copy in a pool of its own: two iterations' data fit
	sh(b, "zfs create src/bench")
	writeRandom(b, "/src/bench/base", 8<<20, 100)
	sh(b, "zfs snapshot src/bench@b0 && zfs send src/bench@b0 | zfs recv -u pipe/bench")
	e := startSink(b, "dst/zrepl", []string{"garage"})
	s := sender(b, map[string]bool{"src/bench": true})
	if err := replicate(b, s, e.client, false).Err(); err != nil {
		b.Fatal(err)
	}
	// The same stream over the plain TCP transport, into a pool of its own,
	// by a second push job (its own cursor and holds).
	testenv.ZPool(b, "dst2")
	sh(b, "zfs create dst2/zrepl")
	tcpClient := startTCPSink(b, "dst2/zrepl")
	tcpSender := sender(b, map[string]bool{"src/bench": true})
	tcpSender.Job = "pushtcp"
	tcpRound := func() *zfsrepl.Report {
		return zfsrepl.Replicate(context.Background(), tcpSender, tcpClient, zfsrepl.Config{Job: "pushtcp"})
	}
	if err := tcpRound().Err(); err != nil {
		b.Fatal(err)
	}
	const size = 256 << 20
	var pipeDur, tlsDur, roundDur, tcpDur time.Duration
	var streamBytes int64
	b.ResetTimer()
	b.StopTimer()
	for i := 1; i <= b.N; i++ {
		if i > 1 { // the pools hold one iteration: b(i-1) is destroyed below
			sh(b, fmt.Sprintf("rm /src/bench/f%d", i-1))
		}
		writeRandom(b, fmt.Sprintf("/src/bench/f%d", i), size, uint64(200+i))
		sh(b, fmt.Sprintf("sync && zfs snapshot src/bench@b%d", i))
		pipe := func() {
			cmd := fmt.Sprintf("zfs send -i @b%d src/bench@b%d | zfs recv -u pipe/bench", i-1, i)
			t0 := time.Now()
			if out, err := exec.Command("sh", "-c", "set -o pipefail; "+cmd).CombinedOutput(); err != nil {
				b.Fatalf("%s: %v\n%s", cmd, err, out)
			}
			pipeDur += time.Since(t0)
		}
		viaTLS := func() {
			t0 := time.Now()
			rep := replicate(b, s, e.client, false)
			roundDur += time.Since(t0)
			if err := rep.Err(); err != nil {
				b.Fatal(err)
			}
			st := rep.Filesystems[0].Steps
			if len(st) != 1 || st[0].Kind != zfsrepl.StepIncremental {
				b.Fatalf("%+v", st)
			}
			tlsDur += st[0].Transfer
			streamBytes += st[0].Bytes
		}
		viaTCP := func() {
			rep := tcpRound()
			if err := rep.Err(); err != nil {
				b.Fatal(err)
			}
			tcpDur += rep.Filesystems[0].Steps[0].Transfer
		}
		b.StartTimer()
		if i%2 == 1 {
			pipe()
			viaTLS()
		} else {
			viaTLS()
			pipe()
		}
		b.StopTimer()
		viaTCP()
		// Every copy now has b(i), the new incremental base (and the
		// cursors and last-received holds are on it): free b(i-1).
		sh(b, fmt.Sprintf("zfs list -H -o name -t snapshot | grep '@b%d$' | xargs -n1 zfs destroy", i-1))
		// The pools' files are on the guest's tmpfs (half its memory): hand
		// the freed blocks back, or the next iteration fills it and the
		// pools suspend (a hang, not an error).
		sh(b, "for p in src dst pipe dst2; do zpool trim -w $p || exit 1; done")
	}
	mb := float64(b.N) * size / (1 << 20)
	b.ReportMetric(mb/pipeDur.Seconds(), "pipe-MB/s")
	b.ReportMetric(mb/tlsDur.Seconds(), "tls-MB/s")
	b.ReportMetric(mb/roundDur.Seconds(), "tls-round-MB/s")
	b.ReportMetric(100*pipeDur.Seconds()/tlsDur.Seconds(), "tls/pipe-%")
	b.ReportMetric(mb/tcpDur.Seconds(), "tcp-MB/s")
	fmt.Fprintf(os.Stdout, "BENCH n=%d data=%dMiB stream=%dB pipe=%v tls-stream=%v tls-round=%v tcp-stream=%v\n",
		b.N, size>>20, streamBytes, pipeDur, tlsDur, roundDur, tcpDur)
}
