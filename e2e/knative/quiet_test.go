//go:build e2e

package knative

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclient "knative.dev/networking/pkg/client/clientset/versioned"
	ping "knative.dev/serving/test/test_images/grpc-ping/proto"

	"sluice.dev/sluice/e2e/stack"
)

// quiet is how long the streams of TestQuietStreams stay silent:
// $SLUICE_E2E_QUIET (make e2e-long sets 5m30s, longer than Envoy's own
// 5-minute stream idle default), else a few seconds to prove the path.
func quiet(t *testing.T) time.Duration {
	v := os.Getenv("SLUICE_E2E_QUIET")
	if v == "" {
		return 5 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("SLUICE_E2E_QUIET: %v", err)
	}
	return d
}

// No connection manager of any Envoy bounds a quiet stream: Envoy's own
// default would reset it after 5 minutes.
func TestNoStreamIdleBound(t *testing.T) {
	hcm := regexp.MustCompile(`"@type":\s*"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"`)
	off := regexp.MustCompile(`"stream_idle_timeout":\s*"0s"`)
	for i := range 2 {
		url := fmt.Sprintf("http://127.0.0.1:%d/config_dump?resource=dynamic_listeners", st.Options().Ports.EnvoyAdmin+i)
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		n, z := len(hcm.FindAllIndex(b, -1)), len(off.FindAllIndex(b, -1))
		if n == 0 || z != n {
			t.Errorf("envoy-%d: %d connection managers, %d with stream_idle_timeout 0s", i, n, z)
		}
	}
}

// A WebSocket and a gRPC stream through a Knative Service, straight to
// its pod and through the activator, stay silent for quiet(t) and then
// still exchange a message. With $SLUICE_E2E_QUIET above 5 minutes this
// fails on Envoy's default stream idle timeout (make e2e-long).
func TestQuietStreams(t *testing.T) {
	silence := quiet(t)
	nc, err := netclient.NewForConfig(st.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		grpc bool
		// target-burst-capacity: 0 takes the activator out of the path
		// once a pod is up, -1 keeps it in.
		tbc  string
		mode v1alpha1.ServerlessServiceOperationMode
	}{
		{"quiet-ws", false, "0", v1alpha1.SKSOperationModeServe},
		{"quiet-ws-act", false, "-1", v1alpha1.SKSOperationModeProxy},
		{"quiet-grpc", true, "0", v1alpha1.SKSOperationModeServe},
		{"quiet-grpc-act", true, "-1", v1alpha1.SKSOperationModeProxy},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			deleteService(t, c.name)
			apply(t, quietService(c.name, c.grpc, c.tbc))
			rev := c.name + "-v1"
			err := wait.PollUntilContextTimeout(context.Background(), time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				sks, err := nc.NetworkingV1alpha1().ServerlessServices(ns).Get(ctx, rev, metav1.GetOptions{})
				return err == nil && sks.Spec.Mode == c.mode && sks.IsReady(), nil
			})
			if err != nil {
				t.Fatalf("ServerlessService %s never in mode %s: %v", rev, c.mode, err)
			}
			host := Host(ns, c.name, "")
			exchange := wsExchange
			if c.grpc {
				exchange = grpcExchange
			}
			start := time.Now()
			if err := exchange(host, silence); err != nil {
				t.Fatalf("after %v (%s): %v", time.Since(start).Round(time.Second), c.mode, err)
			}
			t.Logf("quiet %v, then a message both ways (%s)", silence, c.mode)
		})
	}
}

// quietService is a Knative Service with one pod kept up: the e2e
// backend (a WebSocket echo on /ws), or Serving's grpc-ping on h2c. Its
// timeouts are Serving's most (max-revision-timeout-seconds): the
// queue-proxy and the activator end any request at timeoutSeconds, 300 s
// by default, and the queue-proxy a WebSocket at responseStartTimeoutSeconds
// too (the 101 bypasses its response writer, so the response never
// "starts"), also 300 s by default.
func quietService(name string, grpc bool, tbc string) string {
	image, ports := BackendImage, ""
	if grpc {
		image, ports = stack.ServingTestRepo+"/grpc-ping", "\n          ports: [{name: h2c, containerPort: 8080}]"
	}
	return fmt.Sprintf(`apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: %s, namespace: %s}
spec:
  template:
    metadata:
      name: %s-v1
      annotations:
        autoscaling.knative.dev/min-scale: "1"
        autoscaling.knative.dev/target-burst-capacity: %q
    spec:
      timeoutSeconds: 600
      responseStartTimeoutSeconds: 600
      containers:
        - image: %s
          env: [{name: NAME, value: v1}, {name: SUFFIX, value: "-pong"}]%s
`, name, ns, name, tbc, image, ports)
}

// wsExchange opens a WebSocket to host, echoes a message, stays silent
// for silence, and echoes another on the same connection.
func wsExchange(host string, silence time.Duration) error {
	d := websocket.Dialer{NetDial: func(network, _ string) (net.Conn, error) { return net.Dial(network, kc.Gateway) }}
	c, resp, err := d.Dial("ws://"+host+"/ws", nil)
	if err != nil {
		return fmt.Errorf("dial: %v (%v)", err, resp)
	}
	defer c.Close()
	echo := func(msg string) error {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			return err
		}
		_, got, err := c.ReadMessage()
		if err != nil {
			return err
		}
		if string(got) != "v1:"+msg {
			return fmt.Errorf("echo %q, want %q", got, "v1:"+msg)
		}
		return nil
	}
	return quietly(silence, echo)
}

// quietly exchanges a message, stays silent, and exchanges another.
func quietly(silence time.Duration, exchange func(msg string) error) error {
	if err := exchange("before"); err != nil {
		return fmt.Errorf("first message: %w", err)
	}
	time.Sleep(silence)
	if err := exchange("after"); err != nil {
		return fmt.Errorf("message after the silence: %w", err)
	}
	return nil
}

// grpcExchange opens grpc-ping's bidirectional stream to host, pings,
// stays silent for silence, and pings again on the same stream.
func grpcExchange(host string, silence time.Duration) error {
	conn, err := grpc.NewClient("passthrough:///"+host+":80",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(host+":80"),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", kc.Gateway)
		}))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), silence+time.Minute)
	defer cancel()
	stream, err := ping.NewPingServiceClient(conn).PingStream(ctx)
	if err != nil {
		return err
	}
	pingOnce := func(msg string) error {
		if err := stream.Send(&ping.Request{Msg: msg}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if resp.Msg != msg+"-pong" {
			return fmt.Errorf("got %q, want %q", resp.Msg, msg+"-pong")
		}
		return nil
	}
	if err := quietly(silence, pingOnce); err != nil {
		return err
	}
	return stream.CloseSend()
}
