#!/usr/bin/env bash
# Builds helm (pinned in e2e/tools/helm/go.mod) into bin/helm for the chart
# tests. A binary that already reports the pinned version is kept.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/e2e/tools/helm"
bin="$root/bin"
logs="$root/.cache/logs"
mkdir -p "$bin" "$logs"

version="$(cd "$dir" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
if [[ -x "$bin/helm" ]] && "$bin/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$version"; then
  echo "helm $version already built"
  exit 0
fi

# Stamp what helm's own build stamps: its version, and the Kubernetes version
# `helm template` and `helm lint` assume (1.<client-go minor>); without them
# it assumes v1.20 and refuses charts with a newer kubeVersion.
k8s="$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)" # v0.MINOR.PATCH
k8s_minor="$(echo "$k8s" | cut -d. -f2)"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
log="$logs/build-helm.log"
echo "building helm $version (log: $log)"
start=$SECONDS
if ! (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm) >"$log" 2>&1; then
  echo "build of helm failed; last lines of $log:" >&2
  tail -n 30 "$log" >&2
  rm -f "$bin/helm.tmp"
  exit 1
fi
mv "$bin/helm.tmp" "$bin/helm"
echo "built helm $version in $((SECONDS - start))s"
