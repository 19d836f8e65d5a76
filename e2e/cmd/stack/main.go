// Command stack runs the local real stack (etcd, kube-apiserver,
// kube-controller-manager, the pod runner, Sluice and Envoy) on this machine.
//
//	go run ./e2e/cmd/stack up [flags]     # foreground until Ctrl-C
//	go run ./e2e/cmd/stack up -background # detach; prints the summary once up
//	go run ./e2e/cmd/stack down           # stop it, clean up leftovers
//	go run ./e2e/cmd/stack status
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/workload"
)

// backgroundEnv marks the detached child of `up -background`.
const backgroundEnv = "SLUICE_STACK_BACKGROUND"

type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func usage() {
	fmt.Fprintf(os.Stderr, `usage: stack up [-background] [flags] | down | status

up flags:
`)
	upFlags(&stack.Options{}, new(bool)).PrintDefaults()
}

// imageTar is -chart: the pods of the Helm chart run the image's binary.
var imageTar string

func upFlags(o *stack.Options, background *bool) *flag.FlagSet {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	fs.Usage = usage
	fs.BoolVar(background, "background", false, "detach, write the pid file and return once the stack is up")
	fs.IntVar(&o.Envoys, "envoys", 1, "number of Envoy proxies")
	fs.IntVar(&o.Controllers, "controllers", 1, "number of Sluice controller replicas")
	fs.BoolVar(&o.SkipSluice, "no-sluice", false, "do not start Sluice and Envoy")
	fs.BoolVar(&o.SkipPods, "no-pods", false, "do not start the pod runner")
	fs.BoolVar(&o.Serving, "serving", false, "install Knative Serving (built by hack/build-serving.sh) with Sluice as its ingress")
	fs.StringVar(&o.Subnet, "subnet", "10.213.7.0/24", "pod subnet; the bridge takes its first address")
	fs.StringVar(&o.ServiceCIDR, "service-cidr", "10.213.96.0/20", "ClusterIP range (local to this host, proxied to the endpoints)")
	fs.StringVar(&o.Bridge, "bridge", "sluice0", "bridge name")
	fs.StringVar(&o.StateDir, "state-dir", "", "state directory (default <repo>/.stack)")
	fs.Var((*multi)(&o.SluiceArgs), "sluice-arg", "extra argument for `sluice controller` (repeatable)")
	fs.StringVar(&imageTar, "chart", "", "leave Sluice to the Helm chart (no Sluice, Envoy or gateway Services of the stack's own): its controller image runs the binary in this image tarball (make image), its Envoy image bin/envoy")
	return fs
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		fs := flag.NewFlagSet("down", flag.ExitOnError)
		dir := fs.String("state-dir", "", "state directory (default <repo>/.stack)")
		fs.Parse(os.Args[2:])
		err = stack.Down(stack.Options{StateDir: *dir})
		if err == nil {
			fmt.Println("stack is down")
		}
	case "status":
		err = status()
	case "-h", "-help", "--help", "help":
		usage()
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stack:", err)
		os.Exit(1)
	}
}

func up(args []string) error {
	var o stack.Options
	var background bool
	fs := upFlags(&o, &background)
	fs.Parse(args)
	if background {
		return upBackground(o, args)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if imageTar != "" {
		images, err := chartImages(ctx, imageTar)
		if err != nil {
			return err
		}
		o.Images, o.Chart = images, true
	}
	s, err := stack.Start(ctx, o)
	if err != nil {
		return err
	}
	fmt.Print("\n", s.Summary())
	if os.Getenv(backgroundEnv) == "" {
		fmt.Print("\nCtrl-C stops the stack.\n")
	}
	select {
	case <-ctx.Done():
		fmt.Println("stopping the stack")
	case err = <-s.Failed():
		fmt.Fprintln(os.Stderr, "stack:", err)
	}
	if serr := s.Stop(); serr != nil {
		fmt.Fprintln(os.Stderr, "stack: cleanup:", serr)
	}
	if err == nil {
		fmt.Println("stack stopped")
	}
	return err
}

// upBackground runs `up` again in a new session with output to
// logs/stack.log and returns once it is up (its state.json appears).
func upBackground(o stack.Options, args []string) error {
	root, err := stack.FindRoot()
	if err != nil {
		return err
	}
	dir := o.StateDir
	if dir == "" {
		dir = filepath.Join(root, ".stack")
	}
	if pid, ok := stack.OwnerPid(dir); ok {
		return fmt.Errorf("a stack is already running (pid %d); stop it with: go run ./e2e/cmd/stack down", pid)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "logs", stack.BackgroundLog)
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var child []string
	for _, a := range args {
		if a != "-background" && a != "--background" && a != "-background=true" && a != "--background=true" {
			child = append(child, a)
		}
	}
	cmd := exec.Command(exe, append([]string{"up"}, child...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), backgroundEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Printf("stack starting in the background (pid %d, log %s)\n", cmd.Process.Pid, logPath)
	statePath := filepath.Join(dir, "state.json")
	deadline := time.Now().Add(5 * time.Minute)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("the stack exited while starting (%v):\n%s", err, b)
		case <-time.After(500 * time.Millisecond):
		}
		if pid, ok := stack.OwnerPid(dir); ok && pid == cmd.Process.Pid && exists(statePath) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the stack is not up after 5 minutes; see %s", logPath)
		}
	}
	// Let it print its summary, then show the log so far.
	time.Sleep(200 * time.Millisecond)
	b, _ := os.ReadFile(logPath)
	fmt.Print(string(b))
	fmt.Printf("pid file: %s\nstop it with: go run ./e2e/cmd/stack down\n", filepath.Join(dir, "owner.pid"))
	return nil
}

// chartImages are the e2e backend and test images, and the chart's.
func chartImages(ctx context.Context, tar string) (map[string]string, error) {
	root, err := stack.FindRoot()
	if err != nil {
		return nil, err
	}
	images, err := workload.Images(ctx, root)
	if err != nil {
		return nil, err
	}
	chart, err := stack.ChartImages(filepath.Join(root, "bin"), tar)
	if err != nil {
		return nil, err
	}
	maps.Copy(images, chart)
	return images, nil
}

func status() error {
	s, err := stack.Attach(context.Background(), stack.Options{})
	if errors.Is(err, stack.ErrNotRunning) {
		fmt.Println("no stack is running")
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Print(s.Summary())
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
