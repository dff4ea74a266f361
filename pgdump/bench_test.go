package pgdump

import (
	"context"
	"io"
	"testing"
)

// BenchmarkDump compares, on the pgbench database of the tests (a 214 MB
// pg_dumpall), pg_dumpall > /dev/null with Dump into a new file://
// repository (every chunk new: the worst case) and into one that already
// holds the same dump (the daily case).
//
//	go test -run '^$' -bench Dump -benchtime 3x ./pgdump/
func BenchmarkDump(b *testing.B) {
	env := bigDB(b)
	conn := Conn{DSN: env.DSN, BinDir: env.BinDir}
	var size int64
	b.Run("pg_dumpall-devnull", func(b *testing.B) {
		for b.Loop() {
			cmd := conn.command(context.Background(), "pg_dumpall", conn.dsnArgs("")...)
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, out)
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			size = n
		}
		b.SetBytes(size)
	})
	b.Run("cairn-new-repo", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			r := newRepo(b)
			b.StartTimer()
			vs, err := Dump(context.Background(), r, DumpOptions{Conn: conn})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(vs[0].Size)
		}
	})
	b.Run("cairn-same-repo", func(b *testing.B) {
		r := newRepo(b)
		if _, err := Dump(context.Background(), r, DumpOptions{Conn: conn}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			vs, err := Dump(context.Background(), r, DumpOptions{Conn: conn})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(vs[0].Size)
			b.ReportMetric(float64(vs[0].Stats.BytesWritten), "new-stored-B")
		}
	})
}
