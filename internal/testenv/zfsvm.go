package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The OpenZFS VM.
//
// The host kernel cannot load the zfs module, so tests that need ZFS run inside
// a qemu guest that `scripts/testenv up zfsvm` prepares (ZFSVM_KERNEL,
// ZFSVM_INITRD) and ZFSVM_RUN boots. A package opts in with
//
//	func TestMain(m *testing.M) { os.Exit(testenv.RunInZFSVM(m)) }
//
// and its ZFS tests start with testenv.ZFS(t) or testenv.ZPool(t, name). On the
// host, RunInZFSVM builds the package's test binary statically, boots one
// guest for the whole package, runs the binary there as root with the same
// -test.* flags, streams its output, and exits with the guest's verdict. All
// tests of such a package run in the guest (under software emulation: a few
// times slower), so keep ZFS tests in packages of their own, apart from tests
// that need the host's servers (S3, Ceph, PostgreSQL are not reachable from
// the guest).

// ZFSVMCommands are main packages (import paths) that RunInZFSVM also builds
// with CGO_ENABLED=0 into the guest's share, for tests that run the real
// binaries as processes in the guest. A test file adds to it from an init
// function; GuestCommand returns where one is in the guest.
var ZFSVMCommands []string

// guestBin is where the guest finds the binaries of ZFSVMCommands.
const guestBin = "/mnt/host/bin"

// GuestCommand returns the path in the guest of the binary of a package of
// ZFSVMCommands, named after the package's last element ("cairn-zrepl" for
// ".../cmd/cairn-zrepl"); the test fails when it is not there.
func GuestCommand(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(guestBin, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not in the guest (is its package in testenv.ZFSVMCommands?): %v", name, err)
	}
	return p
}

// GuestEnv is the variable that marks a process running inside the OpenZFS
// guest; RunInZFSVM sets it to "1" there.
const GuestEnv = "CAIRN_IN_ZFSVM"

// InZFSVM reports whether this process runs inside the OpenZFS guest.
func InZFSVM() bool { return os.Getenv(GuestEnv) == "1" }

// zfsvmVars are the env file variables the VM needs.
var zfsvmVars = []string{"ZFSVM_KERNEL", "ZFSVM_INITRD", "ZFSVM_RUN"}

// zfsvmMissing returns why the VM cannot be booted from this host, or "".
func zfsvmMissing() string {
	var missing []string
	for _, n := range zfsvmVars {
		v := Get(n)
		if v == "" {
			missing = append(missing, n+" unset")
		} else if _, err := os.Stat(v); err != nil {
			missing = append(missing, n+"="+v+" not found")
		}
	}
	return strings.Join(missing, ", ")
}

// ZFS ends the test unless it runs inside the OpenZFS guest with /dev/zfs:
// skipped with a hint, or failed under CI=true, as Require does. A test that
// calls it belongs to a package whose TestMain calls RunInZFSVM.
func ZFS(t testing.TB) {
	t.Helper()
	if InZFSVM() {
		if _, err := os.Stat("/dev/zfs"); err != nil {
			t.Fatalf("inside the zfsvm guest but /dev/zfs is missing: %v", err)
		}
		return
	}
	msg := "ZFS is only available inside the OpenZFS VM: "
	if why := zfsvmMissing(); why != "" {
		msg += "the VM is not prepared (" + why + "): run `scripts/testenv up zfsvm`, or `make test`"
	} else {
		msg += "the package's TestMain must call testenv.RunInZFSVM(m)"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " [CI=true: an absent server is a failure]")
	}
	t.Skip(msg)
}

// ZPool creates a ZFS pool named name for the test, backed by a sparse 1 GiB
// file in the test's temporary directory (the guest's /tmp is tmpfs), with
// atime=off and mounted at /name, and destroys it when the test ends. It
// returns name. Tests running in parallel must use different names. It calls
// ZFS(t) first.
func ZPool(t testing.TB, name string) string {
	t.Helper()
	ZFS(t)
	img := filepath.Join(t.TempDir(), name+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 1<<30); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("zpool", "create", "-f", "-O", "atime=off", "-O", "mountpoint=/"+name,
		name, img).CombinedOutput(); err != nil {
		t.Fatalf("zpool create %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("zpool", "destroy", "-f", name).CombinedOutput(); err != nil {
			t.Errorf("zpool destroy %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// RunInZFSVM is the TestMain body of a package whose tests need ZFS:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.RunInZFSVM(m)) }
//
// Inside the guest it returns m.Run(). On the host, when the VM is prepared
// (ZFSVM_KERNEL, ZFSVM_INITRD, ZFSVM_RUN), it builds the package's test binary
// with CGO_ENABLED=0 (build tags from CAIRN_ZFSVM_TAGS, none by default), and
// the binaries of ZFSVMCommands into the share's bin/, copies the package's
// testdata into a fresh share directory, boots one guest, runs the test
// binary there as root with this process's -test.* flags,
// streams the guest's output to stdout and returns the guest's exit code. When
// the VM is not prepared, or for -test.list, it runs the tests on the host,
// where ZFS(t) skips them (or fails them under CI=true).
//
// A -test.cpuprofile is taken in the guest and copied back, with the guest's
// test binary beside it (PROFILE.bin) for go tool pprof.
//
// The guest's timeout is -test.timeout plus five minutes (ZFSVM_TIMEOUT, in
// seconds, overrides it); the guest's memory and CPUs follow ZFSVM_MEM and
// ZFSVM_SMP. The share directory, with the console log, is kept when the run
// fails, and its path printed.
func RunInZFSVM(m *testing.M) int {
	if InZFSVM() || zfsvmMissing() != "" || hasFlag(os.Args[1:], "list") {
		return m.Run()
	}
	code, err := runGuest(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "zfsvm: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// saveGuestProfile copies the guest's CPU profile to where -test.cpuprofile
// asked for it (relative paths are under -test.outputdir, as go test passes
// them), with the guest's test binary beside it as PROFILE.bin: the
// profile's symbols are that binary's, not the host's.
func saveGuestProfile(share, binary, profile string, args []string) error {
	if dir, ok := flagValue(args, "outputdir"); ok && !filepath.IsAbs(profile) {
		profile = filepath.Join(dir, profile)
	}
	for from, to := range map[string]string{"cpu.pprof": profile, binary: profile + ".bin"} {
		b, err := os.ReadFile(filepath.Join(share, from))
		if err != nil {
			return fmt.Errorf("the guest's CPU profile: %w", err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			return fmt.Errorf("the guest's CPU profile: %w", err)
		}
	}
	return nil
}

// hostOnlyFlags are -test.* flags whose values are host paths: they are not
// passed to the guest.
var hostOnlyFlags = map[string]bool{
	"testlogfile": true, "coverprofile": true, "cpuprofile": true, "memprofile": true,
	"blockprofile": true, "mutexprofile": true, "trace": true, "outputdir": true,
	"gocoverdir": true, "fuzzcachedir": true,
}

// testFlagName returns NAME for an argument -test.NAME[=V] or --test.NAME[=V].
func testFlagName(arg string) (name string, hasValue bool, ok bool) {
	if strings.HasPrefix(arg, "--") {
		arg = arg[1:]
	}
	s, ok := strings.CutPrefix(arg, "-test.")
	if !ok {
		return "", false, false
	}
	name, _, hasValue = strings.Cut(s, "=")
	return name, hasValue, true
}

// guestArgs returns args without the flags that name host paths.
func guestArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		name, hasValue, ok := testFlagName(args[i])
		if ok && hostOnlyFlags[name] {
			if !hasValue {
				i++ // -test.NAME VALUE
			}
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// flagValue returns the value of -test.name in args, and whether it is there
// (a flag without a value reports "true").
func flagValue(args []string, name string) (string, bool) {
	val, found := "", false
	for i := 0; i < len(args); i++ {
		n, hasValue, ok := testFlagName(args[i])
		if !ok || n != name {
			continue
		}
		found = true
		switch {
		case hasValue:
			_, val, _ = strings.Cut(args[i], "=")
		case i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && name != "v":
			val = args[i+1]
			i++
		default:
			val = "true"
		}
	}
	return val, found
}

func hasFlag(args []string, name string) bool {
	v, ok := flagValue(args, name)
	return ok && v != "" && v != "false"
}

// guestTimeout is how long the guest may run: -test.timeout plus a margin for
// the boot, or ZFSVM_TIMEOUT seconds.
func guestTimeout(args []string) time.Duration {
	if s := os.Getenv("ZFSVM_TIMEOUT"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	if v, ok := flagValue(args, "timeout"); ok {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d + 5*time.Minute
		}
	}
	return 2 * time.Hour
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// guestEnvVars are passed from the host to the guest's test binary: CI keeps
// an absent server a failure, the rest are debugging knobs.
var guestEnvVars = []string{"CI", "GOTRACEBACK", "GODEBUG", "GOMAXPROCS"}

// guestScript is the script the guest runs: the test binary in a copy of the
// package directory, as root, with the marker set.
func guestScript(binary string, args []string) string {
	var b strings.Builder
	b.WriteString("# written by internal/testenv.RunInZFSVM\n")
	fmt.Fprintf(&b, "export %s=1 TMPDIR=/tmp\n", GuestEnv)
	for _, k := range guestEnvVars {
		if v, ok := os.LookupEnv(k); ok {
			fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
		}
	}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "CAIRN_") && k != "CAIRN_TESTENV_FILE" && k != "CAIRN_TESTENV_DIR" {
			fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
		}
	}
	b.WriteString("cd /mnt/host/pkg || exit 125\nexec /mnt/host/" + binary)
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	return b.String()
}

// copyPackageFiles copies the regular files of the package directory src and
// its testdata tree into dst, so tests find their files by relative path.
func copyPackageFiles(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
	}
	td := filepath.Join(src, "testdata")
	if _, err := os.Stat(td); err != nil {
		return nil
	}
	return filepath.WalkDir(td, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case d.Type().IsRegular():
			return copyFile(p, filepath.Join(dst, rel))
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// kernelLine matches a kernel message on the console: "[   20.375221] ...".
var kernelLine = regexp.MustCompile(`^\[ *[0-9]+\.[0-9]+\] `)

// consoleFilter turns the guest's console into the test binary's output: it
// strips the \r the serial line adds, drops the init's ZFSVM_RC marker, and
// holds back the init's own "zfsvm: " lines and the kernel's messages unless
// verbose (they are printed when the run fails).
type consoleFilter struct {
	out     io.Writer
	verbose bool
	held    []string // init lines not printed
}

func (f *consoleFilter) line(l string) {
	l = strings.TrimRight(l, "\r\n")
	l = strings.TrimRight(l, "\r")
	switch {
	case strings.HasPrefix(l, "ZFSVM_RC="):
		return
	case strings.HasPrefix(l, "zfsvm: ") || kernelLine.MatchString(l):
		if !f.verbose {
			f.held = append(f.held, l)
			return
		}
	}
	fmt.Fprintln(f.out, l)
}

func (f *consoleFilter) copy(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		l, err := br.ReadString('\n')
		if l != "" {
			f.line(l)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// runGuest builds the test binary, boots the guest and runs it there.
func runGuest(args []string) (int, error) {
	t0 := time.Now()
	pkgDir, err := os.Getwd()
	if err != nil {
		return 1, err
	}
	share, err := os.MkdirTemp("", "cairn-zfsvm-")
	if err != nil {
		return 1, err
	}
	keep := true
	defer func() {
		if keep {
			fmt.Fprintf(os.Stderr, "zfsvm: share dir with the console log kept: %s\n", share)
		} else {
			os.RemoveAll(share)
		}
	}()
	if err := copyPackageFiles(pkgDir, filepath.Join(share, "pkg")); err != nil {
		return 1, fmt.Errorf("copying %s into the share: %w", pkgDir, err)
	}
	const binary = "pkg.test"
	goBin, err := exec.LookPath("go")
	if err != nil {
		return 1, fmt.Errorf("building the guest's test binary: %w", err)
	}
	build := exec.Command(goBin, "test", "-c", "-o", filepath.Join(share, binary))
	if tags := os.Getenv("CAIRN_ZFSVM_TAGS"); tags != "" {
		build.Args = append(build.Args, "-tags", tags)
	}
	build.Args = append(build.Args, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("building the guest's test binary (CGO_ENABLED=0 go test -c in %s): %v\n%s", pkgDir, err, out)
	}
	for _, pkg := range ZFSVMCommands {
		cmd := exec.Command(goBin, "build", "-o", filepath.Join(share, "bin", filepath.Base(pkg)))
		if tags := os.Getenv("CAIRN_ZFSVM_TAGS"); tags != "" {
			cmd.Args = append(cmd.Args, "-tags", tags)
		}
		cmd.Args = append(cmd.Args, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("building %s for the guest (CGO_ENABLED=0 go build): %v\n%s", pkg, err, out)
		}
	}
	gargs := guestArgs(args)
	profile, profiling := flagValue(args, "cpuprofile")
	if profiling {
		gargs = append(gargs, "-test.cpuprofile=/mnt/host/cpu.pprof")
	}
	if err := os.WriteFile(filepath.Join(share, "run.sh"), []byte(guestScript(binary, gargs)), 0o755); err != nil {
		return 1, err
	}
	built := time.Since(t0)

	timeout := guestTimeout(args)
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()

	cmd := exec.CommandContext(ctx, Get("ZFSVM_RUN"), share, "run.sh")
	cmd.Env = append(os.Environ(),
		"ZFSVM_KERNEL="+Get("ZFSVM_KERNEL"),
		"ZFSVM_INITRD="+Get("ZFSVM_INITRD"),
		"ZFSVM_TIMEOUT="+strconv.Itoa(int(timeout/time.Second)))
	cmd.Stderr = os.Stderr
	// run.sh kills the guest on SIGTERM, also when this process dies first
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 1, err
	}
	filter := &consoleFilter{out: os.Stdout, verbose: hasFlag(args, "v")}

	// Pdeathsig follows the thread that started the child: keep it alive.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	copyErr := filter.copy(stdout)
	err = cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if copyErr != nil && err == nil {
		err = copyErr
	}
	console := filepath.Join(share, ".zfsvm-console.log")
	var why string
	switch {
	case ctx.Err() != nil:
		why = fmt.Sprintf("the guest was stopped (%v) after %v", context.Cause(ctx), time.Since(t0).Round(time.Second))
	case code == 124:
		why = fmt.Sprintf("the guest timed out after %v (-test.timeout plus 5m, or ZFSVM_TIMEOUT)", timeout)
	case code == 125:
		why = "the guest died or failed before the tests gave a verdict"
	case code < 0 || (err != nil && !errors.As(err, new(*exec.ExitError))):
		why = fmt.Sprintf("running %s: %v", cmd.Path, err)
	}
	if profiling {
		if err := saveGuestProfile(share, binary, profile, args); err != nil {
			fmt.Fprintf(os.Stderr, "zfsvm: %v\n", err)
		}
	}
	if code == 0 && why == "" {
		keep = false
		if filter.verbose {
			fmt.Fprintf(os.Stderr, "zfsvm: built in %v, guest run in %v\n",
				built.Round(100*time.Millisecond), (time.Since(t0) - built).Round(100*time.Millisecond))
		}
		return 0, nil
	}
	for _, l := range filter.held {
		fmt.Fprintln(os.Stdout, l)
	}
	if why != "" {
		if code <= 0 {
			code = 1
		}
		return code, fmt.Errorf("%s; console log: %s", why, console)
	}
	return code, nil
}
