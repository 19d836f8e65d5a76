package stack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// controllers are the kube-controller-manager loops the tests need. No
// scheduler, node lifecycle or volume controllers: pods are bound by the
// pod runner and the one node is kept fresh by the stack (which also takes
// off the not-ready taint admission puts on a new node, so DaemonSets
// place their pods).
var controllers = []string{
	"endpoints-controller",
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"garbage-collector-controller",
	"deployment-controller",
	"replicaset-controller",
	"daemonset-controller",
	"resourcequota-controller",
	"service-cidr-controller",
	"clusterrole-aggregation-controller",
}

func (s *Stack) startKube(ctx context.Context) error {
	p := s.opts.Ports
	pk, err := s.writePKI()
	if err != nil {
		return fmt.Errorf("writing certificates: %w", err)
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", p.Etcd)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", p.EtcdPeer)
	etcd, err := s.startProc("etcd", s.bin("etcd"),
		"--name=sluice",
		"--data-dir="+s.path("etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=sluice="+peerURL,
		"--listen-metrics-urls=",
		"--unsafe-no-fsync=true", // a throwaway cluster: speed over durability
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	etcd.ready = func(ctx context.Context, p *proc) error {
		return s.waitHTTP(ctx, p, "etcd", etcdURL+"/health", nil, "", 30*time.Second)
	}
	if err := etcd.ready(ctx, etcd); err != nil {
		return err
	}
	s.logf("etcd ready on %s", etcdURL)

	pki := func(f string) string { return s.path("pki", f) }
	api, err := s.startProc("kube-apiserver", s.bin("kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", p.APIServer),
		// Shows up in the `kubernetes` Endpoints, which reject loopback.
		"--advertise-address="+s.BridgeIP,
		"--cert-dir="+s.path("pki"),
		"--tls-cert-file="+pki("apiserver.crt"),
		"--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--token-auth-file="+pki("tokens.csv"),
		"--authorization-mode=RBAC",
		// Admission webhooks are called at their endpoints, not the
		// cluster IP.
		"--enable-aggregator-routing=true",
		// kubectl logs: the pod runner serves container logs at the node's
		// address, to the API server's client certificate.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-certificate-authority="+pki("ca.crt"),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"),
		"--service-cluster-ip-range="+s.opts.ServiceCIDR,
		"--service-node-port-range=30000-32767",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pk.caPEM)
	apiURL := fmt.Sprintf("https://127.0.0.1:%d", p.APIServer)
	api.ready = func(ctx context.Context, p *proc) error {
		return s.waitHTTP(ctx, p, "kube-apiserver", apiURL+"/readyz", &tls.Config{RootCAs: pool}, pk.adminToken, 90*time.Second)
	}
	if err := api.ready(ctx, api); err != nil {
		return err
	}
	s.logf("kube-apiserver ready on %s", apiURL)

	s.Kubeconfig = s.path("kubeconfig")
	if err := writeKubeconfig(s.Kubeconfig, apiURL, pk.caPEM, "admin", pk.adminToken); err != nil {
		return err
	}
	kcmConfig := s.path("pki", "kube-controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmConfig, apiURL, pk.caPEM, "kube-controller-manager", pk.kcmToken); err != nil {
		return err
	}
	s.RESTConfig, err = clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return err
	}
	s.RESTConfig.QPS, s.RESTConfig.Burst = 50, 100
	if s.Client, err = kubernetes.NewForConfig(s.RESTConfig); err != nil {
		return err
	}

	kcm, err := s.startProc("kube-controller-manager", s.bin("kube-controller-manager"),
		"--kubeconfig="+kcmConfig,
		"--authentication-kubeconfig="+kcmConfig,
		"--authorization-kubeconfig="+kcmConfig,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", p.ControllerManager),
		"--cert-dir="+s.path("pki", "kcm"),
		"--leader-elect=false",
		"--controllers="+strings.Join(controllers, ","),
		"--service-account-private-key-file="+pki("sa.key"),
		"--root-ca-file="+pki("ca.crt"),
		"--use-service-account-credentials=false",
		"--concurrent-endpoint-syncs=10",
		"--concurrent-service-endpoint-syncs=10",
		// The pod runner makes a pod Ready within milliseconds, often while
		// the EndpointSlice controller's informer has not yet seen the slice
		// it just created for the new Service; that sync then fails as stale
		// and is retried only after a 1 s backoff, while the Endpoints
		// controller retries in 5 ms. The Knative suites wait for Endpoints
		// and then expect routing through Sluice, which reads slices: a
		// short batch lets the informer catch up first, so a slice lags its
		// Endpoints by this much instead of by a second.
		"--endpointslice-updates-batch-period=100ms",
		"--v=1",
	)
	if err != nil {
		return err
	}
	// Serves a self-signed certificate of its own: only its liveness matters here.
	kcmURL := fmt.Sprintf("https://127.0.0.1:%d/healthz", p.ControllerManager)
	if err := s.waitHTTP(ctx, kcm, "kube-controller-manager", kcmURL, &tls.Config{InsecureSkipVerify: true}, "", 60*time.Second); err != nil {
		return err
	}
	s.logf("kube-controller-manager ready")
	go s.watchProc(etcd)
	go s.watchProc(api)
	go s.watchProc(kcm)
	return nil
}

// watchProc reports a process that dies while the stack runs.
func (s *Stack) watchProc(p *proc) {
	<-p.done
	switch {
	case s.stopping.Load():
	case p.halted.Load():
		s.logf("%s stopped by the test", p.name)
	case p.optional:
		s.logf("%s exited (%v); the stack goes on", p.name, p.err)
	default:
		s.fail(s.procError(p, "stack part died"))
	}
}

// waitHTTP polls url until it answers 200, the process exits or time runs out.
func (s *Stack) waitHTTP(ctx context.Context, p *proc, what, url string, tlsConf *tls.Config, token string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: nil}}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if p != nil && p.exited() {
			return s.procError(p, "waiting for "+what)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (%s: %s); see %s", what, timeout, url, last, s.path("logs", p.name+".log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func writeKubeconfig(path, server string, ca []byte, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sluice"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["sluice"] = &clientcmdapi.Context{Cluster: "sluice", AuthInfo: user}
	cfg.CurrentContext = "sluice"
	return clientcmd.WriteToFile(*cfg, path)
}

// waitTCP polls until addr accepts connections.
func (s *Stack) waitTCP(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return s.procError(p, "waiting for "+addr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %s; see %s", p.name, addr, timeout, s.path("logs", p.name+".log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
