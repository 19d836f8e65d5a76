package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// state is what a running stack tells other processes about itself
// (state.json in the state dir), written once it is up.
type state struct {
	Pid           int
	Kubeconfig    string
	BridgeIP      string
	Subnet        string
	External      Gateway
	Internal      Gateway
	SluiceStarted bool
	SluiceSkip    string
	PodsSkip      string
	Controllers   int
	Envoys        int
	Serving       bool
	Ports         Ports
}

func (s *Stack) writeState() error {
	b, err := json.MarshalIndent(state{
		Pid: os.Getpid(), Kubeconfig: s.Kubeconfig, BridgeIP: s.BridgeIP, Subnet: s.opts.Subnet,
		External: s.External, Internal: s.Internal, SluiceStarted: s.SluiceStarted,
		SluiceSkip: s.SluiceSkipReason, PodsSkip: s.PodsSkipReason,
		Controllers: s.opts.Controllers, Envoys: s.opts.Envoys, Serving: s.opts.Serving, Ports: s.opts.Ports,
	}, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path("state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.path("state.json"))
}

// ErrNotRunning is returned by Attach when no stack runs.
var ErrNotRunning = errors.New("no stack is running")

// Attach connects to a stack another process runs (e.g. `stack up
// --background`), so tests can skip the start-up. Stop on the result does
// nothing: the owner stops it.
func Attach(ctx context.Context, opts Options) (*Stack, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if _, ok := OwnerPid(opts.StateDir); !ok {
		return nil, ErrNotRunning
	}
	b, err := os.ReadFile(filepath.Join(opts.StateDir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("the stack in %s is still starting", opts.StateDir)
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	opts.Ports, opts.Subnet, opts.Controllers, opts.Envoys, opts.Serving = st.Ports, st.Subnet, st.Controllers, st.Envoys, st.Serving
	s := &Stack{opts: opts, envoys: st.Envoys, Kubeconfig: st.Kubeconfig, BridgeIP: st.BridgeIP, External: st.External,
		Internal: st.Internal, SluiceStarted: st.SluiceStarted, attached: true,
		SluiceSkipReason: st.SluiceSkip, PodsSkipReason: st.PodsSkip}
	if s.RESTConfig, err = clientcmd.BuildConfigFromFlags("", st.Kubeconfig); err != nil {
		return nil, err
	}
	s.RESTConfig.QPS, s.RESTConfig.Burst = 50, 100
	if s.Client, err = kubernetes.NewForConfig(s.RESTConfig); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.Client.CoreV1().Namespaces().Get(ctx, TestNS, metav1.GetOptions{}); err != nil {
		return nil, fmt.Errorf("the running stack does not answer: %w", err)
	}
	return s, nil
}

// StartOrAttach attaches to a running stack or starts a new one.
func StartOrAttach(ctx context.Context, opts Options) (*Stack, error) {
	s, err := Attach(ctx, opts)
	if errors.Is(err, ErrNotRunning) {
		return Start(ctx, opts)
	}
	return s, err
}
