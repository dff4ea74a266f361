package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testApp() (*App, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &App{IO: IO{In: strings.NewReader(""), Out: &out, Err: &errb, Getenv: func(string) string { return "" }}}, &out, &errb
}

var errLocked = errors.New("repository is locked")

func newRoot(a *App) *cobra.Command {
	root := &cobra.Command{Use: "tool", Short: "a tool", PersistentPreRunE: func(*cobra.Command, []string) error { return a.Setup() }}
	a.AddFlags(root)
	run := func(err error) func(*cobra.Command, []string) error {
		return func(*cobra.Command, []string) error { return err }
	}
	root.AddCommand(&cobra.Command{Use: "ok", Args: Args(cobra.NoArgs), RunE: run(nil)},
		&cobra.Command{Use: "fail", RunE: run(errors.New("disk on fire"))},
		&cobra.Command{Use: "bad", RunE: run(Usagef("--x %q: want a number", "y"))},
		&cobra.Command{Use: "partial", RunE: run(WithExitCode(ExitPartial, errors.New("1 of 3 volumes failed")))},
		&cobra.Command{Use: "locked", RunE: run(fmt.Errorf("backup: %w", errLocked))},
		&cobra.Command{Use: "wait", RunE: func(cmd *cobra.Command, _ []string) error {
			<-cmd.Context().Done()
			return fmt.Errorf("reading the source: %w", cmd.Context().Err())
		}},
		a.VersionCmd())
	return root
}

func TestExecuteExitCodes(t *testing.T) {
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"ok"}, ExitOK, ""},
		{[]string{"fail"}, ExitFailure, "tool: disk on fire"},
		{[]string{"bad"}, ExitUsage, `tool: --x "y": want a number`},
		{[]string{"ok", "extra"}, ExitUsage, "Run 'tool --help' for usage."},
		{[]string{"ok", "--nope"}, ExitUsage, "unknown flag: --nope"},
		{[]string{"nope"}, ExitUsage, `unknown command "nope"`},
		{[]string{"--log-level", "loud", "ok"}, ExitUsage, `--log-level "loud"`},
		{[]string{"--log-format", "xml", "ok"}, ExitUsage, `--log-format "xml"`},
		{[]string{"--progress-interval", "-1s", "ok"}, ExitUsage, `--progress-interval -1s`},
		{[]string{"partial"}, ExitPartial, "1 of 3 volumes failed"},
		{[]string{"locked"}, ExitLocked, "tool: backup: repository is locked"},
	}
	for _, c := range cases {
		a, _, errb := testApp()
		a.Classify = func(err error) int {
			if errors.Is(err, errLocked) {
				return ExitLocked
			}
			return 0
		}
		_, code := a.Execute(context.Background(), newRoot(a), c.args)
		assert.Equal(t, c.code, code, "%v", c.args)
		assert.Contains(t, errb.String(), c.msg, "%v", c.args)
	}
}

// TestExecuteInterrupted: a command ended by a signal (its context
// cancelled) exits 130 and says so.
func TestExecuteInterrupted(t *testing.T) {
	a, _, errb := testApp()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, code := a.Execute(ctx, newRoot(a), []string{"wait"})
	assert.Equal(t, ExitInterrupted, code)
	assert.Contains(t, errb.String(), "tool: interrupted: reading the source: context canceled")
}

func TestHelpShowsExitCodes(t *testing.T) {
	a, out, _ := testApp()
	_, code := a.Execute(context.Background(), newRoot(a), []string{"--help"})
	require.Equal(t, ExitOK, code)
	for _, want := range []string{"10   no repository", "130  interrupted", "--log-format", "--progress-interval", "--json"} {
		assert.Contains(t, out.String(), want)
	}
}

func TestVersionCommand(t *testing.T) {
	a, out, _ := testApp()
	_, code := a.Execute(context.Background(), newRoot(a), []string{"version"})
	require.Equal(t, ExitOK, code)
	assert.Regexp(t, `^tool \S+.* go1\.\S+ \S+/\S+ (cgo|no-cgo)\n$`, out.String())
	a, out, _ = testApp()
	_, code = a.Execute(context.Background(), newRoot(a), []string{"version", "--json"})
	require.Equal(t, ExitOK, code)
	var bi BuildInfo
	require.NoError(t, json.Unmarshal(out.Bytes(), &bi))
	assert.Equal(t, "tool", bi.Binary)
	assert.NotEmpty(t, bi.Version)
	assert.NotEmpty(t, bi.Go)
	assert.Equal(t, builtWithCgo, bi.CGO, "cgo in the version output")
}

func TestLogFormatJSON(t *testing.T) {
	a, _, errb := testApp()
	a.LogLevel, a.LogFormat = "info", "json"
	require.NoError(t, a.Setup())
	a.Log.Info("hello", "n", 1)
	var m map[string]any
	require.NoError(t, json.Unmarshal(errb.Bytes(), &m))
	assert.Equal(t, "hello", m["msg"])
}

// TestProgressLogLines: without a terminal (a CronJob's log), progress is a
// log line every interval with bytes, total, rate and ETA.
func TestProgressLogLines(t *testing.T) {
	a, _, errb := testApp()
	a.LogLevel, a.LogFormat, a.ProgressInterval = "info", "text", 20*time.Millisecond
	require.NoError(t, a.Setup())
	p := a.NewProgress("backup vm-1")
	p.Bytes(512<<20, 1<<30)
	p.Bytes(256<<20, 1<<30) // a late report from another goroutine
	time.Sleep(70 * time.Millisecond)
	p.Finish()
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	require.GreaterOrEqual(t, len(lines), 2, errb.String())
	for _, want := range []string{"msg=progress", `op="backup vm-1"`, `done="512.0 MiB"`, `total="1.0 GiB"`, "percent=50.0", "rate=", "eta="} {
		assert.Contains(t, lines[0], want)
	}
}

// TestProgressJSON: with --json, progress is JSON status lines on stderr.
func TestProgressJSON(t *testing.T) {
	a, out, errb := testApp()
	a.LogLevel, a.LogFormat, a.ProgressInterval, a.JSON = "info", "text", 20*time.Millisecond, true
	require.NoError(t, a.Setup())
	p := a.NewProgress("restore")
	p.Bytes(3<<20, 4<<20)
	time.Sleep(50 * time.Millisecond)
	p.Finish()
	assert.Empty(t, out.String(), "progress never goes to stdout")
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	require.GreaterOrEqual(t, len(lines), 2)
	var st progressStatus
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &st), lines[len(lines)-1])
	assert.Equal(t, "status", st.MessageType)
	assert.Equal(t, "restore", st.Op)
	assert.Equal(t, int64(3<<20), st.BytesDone)
	assert.Equal(t, int64(4<<20), st.TotalBytes)
	assert.InDelta(t, 75, st.PercentDone, 0.01)
	assert.Greater(t, st.ETA, 0.0)
}

func TestProgressLine(t *testing.T) {
	a, _, errb := testApp()
	a.ProgressInterval = 0 // not a terminal, no interval: silent
	p := a.NewProgress("backup vm-1")
	p.Bytes(512<<20, 1<<30)
	if l := p.line(); !strings.HasPrefix(l, "backup vm-1 [===============               ]  50% 512.0 MiB / 1.0 GiB") {
		t.Errorf("line = %q", l)
	}
	p.Update("pg_dump", 3<<20, 0)
	if l := p.line(); !strings.HasPrefix(l, "backup vm-1 pg_dump 3.0 MiB  ") {
		t.Errorf("line = %q", l)
	}
	p.Finish()
	assert.Empty(t, errb.String())
}

func TestHumanBytes(t *testing.T) {
	assert.Equal(t, "512 B", HumanBytes(512))
	assert.Equal(t, "4.0 MiB", HumanBytes(4<<20))
}
