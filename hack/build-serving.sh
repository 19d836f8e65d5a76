#!/usr/bin/env bash
# Builds Knative Serving from the knative.dev/serving version go.mod pins,
# inside that module (its own go.sum carries its dependencies):
#   bin/serving/{controller,webhook,activator,autoscaler,queue}
#   bin/serving/test-images/<name>   (test/test_images/*)
#   bin/serving/tests/<pkg>.test     (the e2e test suites, go test -c -tags=e2e)
# Binaries built from the same version are kept.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/bin/serving"
logs="$root/.cache/logs"
mkdir -p "$out/test-images" "$out/tests" "$logs"

cd "$root"
go mod download knative.dev/serving
version="$(go list -m -f '{{.Version}}' knative.dev/serving)"
dir="$(go list -m -f '{{.Dir}}' knative.dev/serving)"
stamp="$out/.version"

components=(controller webhook activator autoscaler queue)
missing=0
for c in "${components[@]}"; do [[ -x "$out/$c" ]] || missing=1; done
[[ -n "$(ls -A "$out/test-images")" ]] || missing=1
tests=(./test/conformance/api/v1 ./test/conformance/runtime ./test/e2e ./test/e2e/tagheader)
for t in "${tests[@]}"; do [[ -x "$out/tests/$(basename "$t").test" ]] || missing=1; done
if [[ $missing == 0 && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
  echo "Knative Serving $version already built: $out"
  exit 0
fi
rm -f "$stamp"

# go build -v prints each package as it is compiled; report the count while it runs.
build() { # what, go command (build or test -c), output, packages...
  local what=$1 gocmd=$2 dest=$3 log="$logs/build-serving-$1.log"; shift 3
  echo "building Knative Serving $version $what (log: $log)"
  local start=$SECONDS
  # shellcheck disable=SC2086 # gocmd is two words for the test suites
  (cd "$dir" && GOWORK=off CGO_ENABLED=0 go $gocmd -v -trimpath -ldflags "-s -w" -o "$dest" "$@") >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 20
    kill -0 "$pid" 2>/dev/null && echo "  $what: $(grep -vc '^go: ' "$log" || true) packages compiled, $((SECONDS - start))s"
  done
  if ! wait "$pid"; then
    echo "build of Knative Serving $what failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    return 1
  fi
  echo "built Knative Serving $what in $((SECONDS - start))s"
}

pkgs=()
for c in "${components[@]}"; do pkgs+=("./cmd/$c"); done
build components build "$out/" "${pkgs[@]}"
build test-images build "$out/test-images/" ./test/test_images/...
build tests "test -c -tags=e2e" "$out/tests/" "${tests[@]}"
echo "$version" >"$stamp"
