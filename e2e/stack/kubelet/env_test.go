package kubelet

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "PORT": "8080"}
	cases := map[string]string{
		"plain":             "plain",
		"$(A)":              "x",
		":$(PORT)/p":        ":8080/p",
		"$(MISSING)":        "$(MISSING)",
		"$$(A)":             "$(A)",
		"$A":                "$A",
		"cost $":            "cost $",
		"$(A)$(PORT)":       "x8080",
		"$(unterminated":    "$(unterminated",
		"a$$b":              "a$b",
		"$(A) and $(OTHER)": "x and $(OTHER)",
	}
	for in, want := range cases {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerEnv(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "ns", UID: "u-1", Labels: map[string]string{"app": "a"}},
		Spec:       corev1.PodSpec{NodeName: "node1"},
	}
	client := fake.NewClientset(
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"K": "cv"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Data: map[string][]byte{"S": []byte("sv")}},
	)
	c := &corev1.Container{
		Name:    "c",
		EnvFrom: []corev1.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}},
		Env: []corev1.EnvVar{
			{Name: "PORT", Value: "8081"},
			{Name: "ADDR", Value: "$(POD_IP):$(PORT)"}, // POD_IP comes later: stays literal
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
			{Name: "SEC", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "S"}}},
			{Name: "URL", Value: "http://$(POD_IP):$(PORT)"},
		},
	}
	env, vars, err := containerEnv(context.Background(), client, pod, c, "10.1.2.3", "10.1.2.1", "/root", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PORT": "8081", "ADDR": "$(POD_IP):8081", "POD_IP": "10.1.2.3", "NAME": "p1", "NS": "ns",
		"APP": "a", "NODE": "node1", "HOST_IP": "10.1.2.1", "SEC": "sv", "CM_K": "cv",
		"URL": "http://10.1.2.3:8081", "HOSTNAME": "p1",
	}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q", k, vars[k], v)
		}
		if !slices.Contains(env, k+"="+v) {
			t.Errorf("env lacks %s=%s", k, v)
		}
	}

	c.Env = append(c.Env, corev1.EnvVar{Name: "BAD", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}})
	if _, _, err := containerEnv(context.Background(), client, pod, c, "10.1.2.3", "10.1.2.1", "/root", nil); err == nil {
		t.Error("missing non-optional configmap accepted")
	}
}

func TestHostsFile(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "ns"},
		Spec:       corev1.PodSpec{HostAliases: []corev1.HostAlias{{IP: "10.0.0.9", Hostnames: []string{"alias.test"}}}},
	}
	got := hostsFile(pod, net.ParseIP("10.1.2.3"), map[string]string{
		"sluice-internal.knative-serving.svc.cluster.local": "10.1.2.1",
	})
	for _, line := range []string{
		"127.0.0.1\tlocalhost",
		"10.1.2.3\tp1",
		"10.1.2.1\tsluice-internal.knative-serving.svc.cluster.local",
		"10.0.0.9\talias.test",
	} {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("hosts file lacks %q:\n%s", line, got)
		}
	}
}
