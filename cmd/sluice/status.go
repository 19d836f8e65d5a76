package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/internal/status"
	"sluice.dev/sluice/internal/xdstls"
)

const statusUsage = `usage: sluice status [flags] [NAMESPACE/NAME]

Without an argument: every Envoy connected to Sluice, its replica, and per
resource type whether it holds what is served now (SYNCED), an older
version (STALE), or rejected some (REJECTED, with Envoy's error).
With NAMESPACE/NAME: that KIngress's generation and Ready condition (from
the API server) and which Envoys serve its routes as served now.

flags:
`

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, statusUsage); fs.PrintDefaults() }
	var servers []string
	fs.Func("server", "host:port of a replica's xDS server (default 127.0.0.1:18000); one answers for the fleet when it has --peers; repeat it, or separate with commas, to ask each replica for its own Envoys", func(s string) error {
		servers = append(servers, strings.Split(s, ",")...)
		return nil
	})
	var files xdstls.Files
	fs.StringVar(&files.Cert, "xds-tls-cert", "", "PEM client certificate for xDS mutual TLS (the chart's: the gateway's Secret)")
	fs.StringVar(&files.Key, "xds-tls-key", "", "PEM key of --xds-tls-cert")
	fs.StringVar(&files.CA, "xds-tls-ca", "", "PEM CA of the replicas' server certificate")
	secret := fs.String("tls-secret", "", "NAMESPACE/NAME of a Secret with tls.crt, tls.key and ca.crt to use as --xds-tls-* (the chart's sluice-gateway-xds-tls)")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file, for NAMESPACE/NAME and --tls-secret")
	output := fs.String("o", "table", "output: table, json or yaml")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the replicas")
	// Flags may come after NAMESPACE/NAME too, as with kubectl.
	var names []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		names = append(names, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(names) > 1 {
		return fmt.Errorf("one NAMESPACE/NAME at most, got %q", names)
	}
	if len(servers) == 0 {
		servers = []string{"127.0.0.1:18000"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// The API server is asked for the Secret and the KIngress, with one
	// client made when first needed.
	var kc *kubeClients
	kube := func() (*kubeClients, error) {
		if kc != nil {
			return kc, nil
		}
		if *kubeconfig == "" {
			return nil, fmt.Errorf("needs --kubeconfig (or $KUBECONFIG)")
		}
		var err error
		kc, err = newKubeClients(*kubeconfig)
		return kc, err
	}
	if *secret != "" {
		if files.Enabled() {
			return fmt.Errorf("--tls-secret and --xds-tls-* exclude each other")
		}
		c, err := kube()
		if err != nil {
			return fmt.Errorf("--tls-secret: %w", err)
		}
		dir, err := os.MkdirTemp("", "sluice-status-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if files, err = secretFiles(ctx, c.kube, *secret, dir); err != nil {
			return fmt.Errorf("--tls-secret: %w", err)
		}
	}
	var creds credentials.TransportCredentials
	if files.Enabled() {
		certs, err := xdstls.Load(files)
		if err != nil {
			return fmt.Errorf("xds-tls: %w", err)
		}
		creds = certs.Client()
	}
	var ing *v1alpha1.Ingress
	if len(names) == 1 {
		ns, name, ok := strings.Cut(names[0], "/")
		if !ok || ns == "" || name == "" {
			return fmt.Errorf("%q: want NAMESPACE/NAME", names[0])
		}
		c, err := kube()
		if err != nil {
			return err
		}
		if ing, err = c.kn.NetworkingV1alpha1().Ingresses(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("KIngress %s/%s: %w", ns, name, err)
		}
	}
	fleet, err := status.Ask(ctx, servers, creds)
	if err != nil {
		return err
	}
	if ing != nil {
		return status.Write(stdout, status.ForIngress(fleet, ing), *output)
	}
	return status.Write(stdout, fleet, *output)
}

type kubeClients struct {
	kube kubernetes.Interface
	kn   clientset.Interface
}

func newKubeClients(path string) (*kubeClients, error) {
	cfg, _, err := kubeConfig(path)
	if err != nil {
		return nil, err
	}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kn, err := clientset.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kubeClients{kube: k, kn: kn}, nil
}

// secretFiles writes the Secret's tls.crt, tls.key and ca.crt into dir.
func secretFiles(ctx context.Context, kube kubernetes.Interface, ref, dir string) (xdstls.Files, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		return xdstls.Files{}, fmt.Errorf("%q: want NAMESPACE/NAME", ref)
	}
	s, err := kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return xdstls.Files{}, err
	}
	f := xdstls.Files{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"), CA: filepath.Join(dir, "ca.crt")}
	for key, path := range map[string]string{"tls.crt": f.Cert, "tls.key": f.Key, "ca.crt": f.CA} {
		if len(s.Data[key]) == 0 {
			return xdstls.Files{}, fmt.Errorf("Secret %s has no %s", ref, key)
		}
		if err := os.WriteFile(path, s.Data[key], 0o600); err != nil {
			return xdstls.Files{}, err
		}
	}
	return f, nil
}
