package kubelet

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// containerEnv builds the environment of a container process: a minimal
// base, the services' variables, then envFrom, then env, with $(VAR)
// references expanded the way the kubelet does. The host's environment is
// not passed on.
func containerEnv(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, podIP, hostIP, home string, services []*corev1.Service) ([]string, map[string]string, error) {
	hostname := pod.Spec.Hostname
	if hostname == "" {
		hostname = pod.Name
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	set("PATH", path)
	set("HOSTNAME", hostname)
	set("HOME", home)
	for _, e := range serviceEnv(services) {
		set(e.Name, e.Value)
	}

	for _, from := range c.EnvFrom {
		data, err := envFromSource(ctx, client, pod.Namespace, from)
		if err != nil {
			return nil, nil, err
		}
		for k, v := range data {
			set(from.Prefix+k, v)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vars))
			continue
		}
		v, ok, err := envValueFrom(ctx, client, pod, c, e.ValueFrom, podIP, hostIP)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, vars, nil
}

func envFromSource(ctx context.Context, client kubernetes.Interface, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	switch {
	case from.ConfigMapRef != nil:
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
				return nil, nil
			}
			return nil, err
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		s, err := client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			if from.SecretRef.Optional != nil && *from.SecretRef.Optional {
				return nil, nil
			}
			return nil, err
		}
		out := make(map[string]string, len(s.Data))
		for k, v := range s.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

// envValueFrom resolves a valueFrom; ok is false for a missing optional key.
func envValueFrom(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, src *corev1.EnvVarSource, podIP, hostIP string) (string, bool, error) {
	switch {
	case src.FieldRef != nil:
		v, err := podField(pod, src.FieldRef.FieldPath, podIP, hostIP)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		// No resource accounting here: report what the spec asks for, or 0.
		name := corev1.ResourceName(strings.TrimPrefix(strings.TrimPrefix(src.ResourceFieldRef.Resource, "limits."), "requests."))
		q, ok := c.Resources.Limits[name]
		if strings.HasPrefix(src.ResourceFieldRef.Resource, "requests.") {
			q, ok = c.Resources.Requests[name]
		}
		if !ok {
			return "0", true, nil
		}
		return resourceValue(q, src.ResourceFieldRef.Divisor, name), true, nil
	case src.ConfigMapKeyRef != nil:
		r := src.ConfigMapKeyRef
		optional := r.Optional != nil && *r.Optional
		cm, err := client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return "", false, ignoreIf(optional, err)
		}
		v, ok := cm.Data[r.Key]
		if !ok && !optional {
			return "", false, fmt.Errorf("configmap %s has no key %s", r.Name, r.Key)
		}
		return v, ok, nil
	case src.SecretKeyRef != nil:
		r := src.SecretKeyRef
		optional := r.Optional != nil && *r.Optional
		s, err := client.CoreV1().Secrets(pod.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return "", false, ignoreIf(optional, err)
		}
		v, ok := s.Data[r.Key]
		if !ok && !optional {
			return "", false, fmt.Errorf("secret %s has no key %s", r.Name, r.Key)
		}
		return string(v), ok, nil
	}
	return "", false, nil
}

// serviceEnv gives the Docker-link style variables of services (each with
// a cluster IP) as the kubelet does: KUBERNETES_SERVICE_HOST and the like.
func serviceEnv(services []*corev1.Service) []corev1.EnvVar {
	var out []corev1.EnvVar
	add := func(k, v string) { out = append(out, corev1.EnvVar{Name: k, Value: v}) }
	for _, svc := range services {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
			continue
		}
		name := strings.ToUpper(strings.ReplaceAll(svc.Name, "-", "_"))
		add(name+"_SERVICE_HOST", ip)
		add(name+"_SERVICE_PORT", strconv.Itoa(int(svc.Spec.Ports[0].Port)))
		for _, p := range svc.Spec.Ports {
			if p.Name != "" {
				add(name+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), strconv.Itoa(int(p.Port)))
			}
		}
		first := svc.Spec.Ports[0]
		add(name+"_PORT", fmt.Sprintf("%s://%s", strings.ToLower(string(cmp.Or(first.Protocol, corev1.ProtocolTCP))), net.JoinHostPort(ip, strconv.Itoa(int(first.Port)))))
		for _, p := range svc.Spec.Ports {
			proto := cmp.Or(p.Protocol, corev1.ProtocolTCP)
			prefix := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, strings.ToUpper(string(proto)))
			add(prefix, fmt.Sprintf("%s://%s", strings.ToLower(string(proto)), net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))))
			add(prefix+"_PROTO", strings.ToLower(string(proto)))
			add(prefix+"_PORT", strconv.Itoa(int(p.Port)))
			add(prefix+"_ADDR", ip)
		}
	}
	return out
}

func ignoreIf(cond bool, err error) error {
	if cond {
		return nil
	}
	return err
}

// podField implements the downward API fields allowed in env.
func podField(pod *corev1.Pod, field, podIP, hostIP string) (string, error) {
	if k, ok := bracketKey(field, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := bracketKey(field, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	switch field {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", field)
}

// bracketKey parses `prefix['key']`.
func bracketKey(field, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(field, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// expand replaces $(VAR) with its value when VAR is defined and turns $$ into
// $, leaving everything else alone, as Kubernetes does for env, command and
// args.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// resourceValue is q in units of divisor (default 1), rounded up, as the
// kubelet writes it: "536870912" for a 512Mi limit, not "512Mi" (which
// GOMEMLIMIT, say, refuses).
func resourceValue(q, divisor resource.Quantity, name corev1.ResourceName) string {
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == corev1.ResourceCPU {
		return strconv.FormatInt((q.MilliValue()+divisor.MilliValue()-1)/divisor.MilliValue(), 10)
	}
	return strconv.FormatInt((q.Value()+divisor.Value()-1)/divisor.Value(), 10)
}
