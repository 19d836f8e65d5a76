//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// TestHelmRBAC applies the chart's RBAC for real and checks the controller's
// ServiceAccount can do what Sluice needs and nothing more, then runs
// `sluice controller` with that ServiceAccount's token and the chart's flags
// until it is ready and holds the Lease.
func TestHelmRBAC(t *testing.T) {
	ctx := context.Background()
	const release = "sluice-rbac-e2e"
	ensureNamespace(t, helmRBACNS)
	t.Cleanup(func() {
		_ = kube.CoreV1().Namespaces().Delete(ctx, helmRBACNS, metav1.DeleteOptions{})
	})
	objs := chart(helmRender(t, release, helmRBACNS, nil))
	sa := release + "-controller"
	apply := newApplier(t)
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := apply(o, false); err != nil {
				t.Fatalf("applying %s/%s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}
	t.Cleanup(func() {
		_ = kube.RbacV1().ClusterRoleBindings().Delete(ctx, sa, metav1.DeleteOptions{})
		_ = kube.RbacV1().ClusterRoles().Delete(ctx, sa, metav1.DeleteOptions{})
	})
	user := "system:serviceaccount:" + helmRBACNS + ":" + sa
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + helmRBACNS, "system:authenticated"}

	type check struct {
		verb, group, resource, sub, ns, name string
	}
	const kn, coord, disc = "networking.internal.knative.dev", "coordination.k8s.io", "discovery.k8s.io"
	allowed := []check{
		{"list", kn, "ingresses", "", "", ""},
		{"watch", kn, "ingresses", "", "", ""},
		{"get", kn, "ingresses", "", "some-app", "x"},
		{"update", kn, "ingresses", "status", "some-app", "x"},
		{"list", "", "services", "", "", ""},
		{"watch", "", "services", "", "", ""},
		{"list", disc, "endpointslices", "", "", ""},
		{"watch", disc, "endpointslices", "", "", ""},
		{"list", "", "secrets", "", "", ""},
		{"watch", "", "secrets", "", "", ""},
		{"list", "", "configmaps", "", helmRBACNS, ""},
		{"watch", "", "configmaps", "", helmRBACNS, ""},
		{"create", coord, "leases", "", helmRBACNS, ""},
		{"get", coord, "leases", "", helmRBACNS, "sluice-controller"},
		{"update", coord, "leases", "", helmRBACNS, "sluice-controller"},
	}
	denied := []check{
		{"create", kn, "ingresses", "", "some-app", ""},
		{"update", kn, "ingresses", "", "some-app", "x"},
		{"patch", kn, "ingresses", "", "some-app", "x"},
		{"delete", kn, "ingresses", "", "some-app", "x"},
		{"patch", kn, "ingresses", "status", "some-app", "x"},
		{"get", "", "secrets", "", "some-app", "tls"},
		{"create", "", "secrets", "", "some-app", ""},
		{"update", "", "secrets", "", "some-app", "tls"},
		{"delete", "", "secrets", "", "some-app", "tls"},
		{"get", "", "services", "", "some-app", "x"},
		{"create", "", "services", "", "some-app", ""},
		{"update", "", "services", "", helmRBACNS, "sluice-gateway"},
		{"delete", "", "services", "", "some-app", "x"},
		{"update", disc, "endpointslices", "", "some-app", "x"},
		{"delete", disc, "endpointslices", "", "some-app", "x"},
		{"list", "", "configmaps", "", "", ""},
		{"list", "", "configmaps", "", "knative-serving", ""},
		{"update", "", "configmaps", "", helmRBACNS, "config-sluice"},
		{"create", "", "configmaps", "", helmRBACNS, ""},
		{"get", coord, "leases", "", helmRBACNS, "other-lease"},
		{"update", coord, "leases", "", helmRBACNS, "other-lease"},
		{"delete", coord, "leases", "", helmRBACNS, "sluice-controller"},
		{"create", coord, "leases", "", "kube-system", ""},
		{"list", coord, "leases", "", "", ""},
		{"list", "", "pods", "", "", ""},
		{"list", "", "endpoints", "", "", ""},
		{"create", "", "events", "", helmRBACNS, ""},
		{"create", "", "serviceaccounts", "token", helmRBACNS, sa},
		{"impersonate", "", "serviceaccounts", "", helmRBACNS, ""},
		{"escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", ""},
		{"create", "rbac.authorization.k8s.io", "rolebindings", "", helmRBACNS, ""},
	}
	can := func(c check) (bool, string) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: c.verb, Group: c.group, Resource: c.resource,
				Subresource: c.sub, Namespace: c.ns, Name: c.name},
		}}
		res, err := kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Status.Allowed, res.Status.Reason
	}
	for _, c := range allowed {
		if ok, why := can(c); !ok {
			t.Errorf("%s cannot %+v: %s", sa, c, why)
		}
	}
	for _, c := range denied {
		if ok, why := can(c); ok {
			t.Errorf("%s can %+v: %s", sa, c, why)
		}
	}

	// With leader election off there is no Lease access at all.
	for _, o := range chart(helmRender(t, release, helmRBACNS, []string{"controller.leaderElect=false"})).kinds("Role") {
		for _, r := range field(t, o, "rules").([]any) {
			if strings.Contains(fmt.Sprint(r), "leases") {
				t.Errorf("leaderElect=false still grants %v", r)
			}
		}
	}

	t.Run("controller runs with it", func(t *testing.T) { runControllerAs(t, objs, sa) })
}

// runControllerAs runs bin/sluice controller with the chart's arguments and a
// token of the ServiceAccount, on free loopback ports and with an ingress
// class no KIngress has (so it never writes status beside the stack's
// controller).
func runControllerAs(t *testing.T, objs chart, sa string) {
	ctx := context.Background()
	tr, err := kube.CoreV1().ServiceAccounts(helmRBACNS).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["stack"] = &clientcmdapi.Cluster{Server: st.RESTConfig.Host, CertificateAuthority: st.RESTConfig.CAFile,
		CertificateAuthorityData: st.RESTConfig.CAData}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "stack", AuthInfo: "sa"}
	kc.CurrentContext = "sa"
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kcPath); err != nil {
		t.Fatal(err)
	}

	args := strList(firstContainer(t, objs.get(t, "Deployment", sa))["args"])
	tlsFiles := st.XDSTLSFiles("xds-server") // the chart mounts its own at xdsTLSDir
	for i, a := range args {
		a = strings.ReplaceAll(a, xdsTLSDir+"tls.crt", tlsFiles.Cert)
		a = strings.ReplaceAll(a, xdsTLSDir+"tls.key", tlsFiles.Key)
		a = strings.ReplaceAll(a, xdsTLSDir+"ca.crt", tlsFiles.CA)
		args[i] = strings.ReplaceAll(a, "$(SYSTEM_NAMESPACE)", helmRBACNS)
	}
	admin := freeLoopbackAddr(t)
	args = append(args, "--kubeconfig="+kcPath, "--xds-address="+freeLoopbackAddr(t), "--admin-address="+admin,
		"--ingress-class=helm-rbac-e2e.invalid", "--log-format=console", "--leader-elect=true")
	done, logs := startUntilCleanup(t, exec.Command(filepath.Join(helmRoot(t), "bin", "sluice"), args...), "controller")
	eventually(t, 60*time.Second, "the controller's /readyz with the chart's RBAC", func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("the controller exited: %v", err)
		default:
		}
		return ok(&http.Client{Timeout: 3 * time.Second}, "http://"+admin+"/readyz")
	})
	eventually(t, 30*time.Second, "the Lease", func() error {
		l, err := kube.CoordinationV1().Leases(helmRBACNS).Get(ctx, "sluice-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
	if strings.Contains(strings.ToLower(logs.String()), "forbidden") {
		t.Errorf("the controller was refused something:\n%s", logs.String())
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
