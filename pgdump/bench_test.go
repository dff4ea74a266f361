package pgdump

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// selfCPU is the user and system CPU time this process has used (its
// children, pg_dumpall among them, not included).
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDump compares, on the pgbench database of the tests (a 214 MB
// pg_dumpall), `pg_dumpall > /dev/null` with Dump into a new file://
// repository (every chunk new: the worst case) and into one that already
// holds the same dump (the daily case). Each iteration runs the baseline
// and Dump back to back, in alternating order, so that both see the same
// load; the ratio metric is Dump's total time over the baseline's, and
// cpu-s/op the CPU time cairn itself used per dump (not the dump tool's).
//
//	go test -run '^$' -bench Dump -benchtime 5x ./pgdump/
func BenchmarkDump(b *testing.B) {
	env := bigDB(b)
	conn := Conn{DSN: env.DSN, BinDir: env.BinDir}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	baseline := func() time.Duration {
		start := time.Now()
		pc := conn.command("pg_dumpall", conn.dsnArgs("")...)
		cmd := exec.Command(pc.Path, pc.Args...) // straight into /dev/null: no pipe
		cmd.Env, cmd.Stdout = pc.Env, devnull
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	run := func(b *testing.B, newRepoEach bool) {
		r := newRepo(b)
		if !newRepoEach {
			if _, err := Dump(context.Background(), r, DumpOptions{Conn: conn}); err != nil {
				b.Fatal(err)
			}
		}
		var base, ours, cpu time.Duration
		var stored, size int64
		i := 0
		b.ResetTimer()
		for b.Loop() {
			b.StopTimer()
			if newRepoEach {
				r = newRepo(b)
			}
			if i%2 == 0 {
				base += baseline()
			}
			b.StartTimer()
			start, cpu0 := time.Now(), selfCPU(b)
			vs, err := Dump(context.Background(), r, DumpOptions{Conn: conn})
			if err != nil {
				b.Fatal(err)
			}
			ours += time.Since(start)
			cpu += selfCPU(b) - cpu0
			b.StopTimer()
			if i%2 == 1 {
				base += baseline()
			}
			b.StartTimer()
			stored, size = vs[0].Stats.BytesWritten, vs[0].Size
			i++
		}
		b.SetBytes(size)
		b.ReportMetric(float64(stored), "new-stored-B")
		b.ReportMetric(float64(base.Nanoseconds())/float64(i), "pg_dumpall-ns/op")
		b.ReportMetric(float64(ours)/float64(base), "ratio")
		b.ReportMetric(cpu.Seconds()/float64(i), "cpu-s/op")
	}
	b.Run("new-repo", func(b *testing.B) { run(b, true) })
	b.Run("same-repo", func(b *testing.B) { run(b, false) })
}
