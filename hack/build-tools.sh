#!/usr/bin/env bash
# Builds the binaries the local stack runs into bin/: kube-apiserver,
# kube-controller-manager and kubectl (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3).
# A binary that already reports the pinned version is kept.
# Usage: hack/build-tools.sh [kube-apiserver|kube-controller-manager|kubectl|etcd ...]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/bin"
logs="$root/.cache/logs"
mkdir -p "$bin" "$logs"

k8s_version=v1.35.4
etcd_version=3.6.16

# The same variables Kubernetes' own build stamps, so `kubectl version` and
# the emulation-version logic see a real release.
k8s_ldflags() {
  local date
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local major="${k8s_version#v}"; major="${major%%.*}"
  local minor="${k8s_version#v*.}"; minor="${minor%%.*}"
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$k8s_version"
    flags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

has_version() { # binary, pattern
  [[ -x "$bin/$1" ]] && "$bin/$1" --version 2>/dev/null | grep -q -- "$2"
}

# go build -v prints each package as it is compiled; report the count while it runs.
build() { # name, module dir, package, ldflags
  local name=$1 dir=$2 pkg=$3 ldflags=$4 log="$logs/build-$1.log"
  echo "building $name (log: $log)"
  local start=$SECONDS
  (cd "$dir" && go build -v -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg") >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 20
    kill -0 "$pid" 2>/dev/null && echo "  $name: $(grep -vc '^go: ' "$log" || true) packages compiled, $((SECONDS - start))s"
  done
  if ! wait "$pid"; then
    echo "build of $name failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    rm -f "$bin/$name.tmp"
    return 1
  fi
  mv "$bin/$name.tmp" "$bin/$name"
  echo "built $name in $((SECONDS - start))s"
}

want=("$@")
[[ ${#want[@]} -eq 0 ]] && want=(etcd kube-apiserver kube-controller-manager kubectl)

for name in "${want[@]}"; do
  case "$name" in
    kube-apiserver|kube-controller-manager)
      if has_version "$name" "Kubernetes $k8s_version\$"; then echo "$name $k8s_version already built"; continue; fi
      build "$name" "$root/e2e/tools" "k8s.io/kubernetes/cmd/$name" "$(k8s_ldflags)" ;;
    kubectl)
      if [[ -x "$bin/kubectl" ]] && "$bin/kubectl" version --client 2>/dev/null | grep -q "Client Version: $k8s_version\$"; then echo "kubectl $k8s_version already built"; continue; fi
      build kubectl "$root/e2e/tools" k8s.io/kubernetes/cmd/kubectl "$(k8s_ldflags)" ;;
    etcd)
      if has_version etcd "etcd Version: $etcd_version"; then echo "etcd $etcd_version already built"; continue; fi
      build etcd "$root/e2e/tools/etcd" go.etcd.io/etcd/server/v3 "-s -w" ;;
    *) echo "unknown binary $name" >&2; exit 2 ;;
  esac
done
