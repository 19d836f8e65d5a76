# Sluice. `make demo` runs it on the local real stack; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Tests that start the local stack or need root carry the e2e build tag;
# every other test is a unit test (`go test ./...` runs them as any user).
E2E_PKGS := ./e2e/ ./e2e/install/ ./e2e/knative/ ./e2e/stack/ ./e2e/stack/kubelet/

.PHONY: all build test unit e2e e2e-long fuzz-e2e conformance serving-conformance serving-conformance-ci bench bench-scale bench-scale-ci bench-dataplane bench-dataplane-variants bench-dataplane-ci bench-fleet bench-fleet-ci fmt vet lint tools serving envoy up up-chart down demo clean manifest image
IMAGE ?= sluice:$(VERSION)

all: build

# bin/sluice-testing adds the flags only e2e tests use (NACK injection).
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/sluice ./cmd/sluice
	$(GO) build -tags sluicetesting -ldflags "$(LDFLAGS)" -o bin/sluice-testing ./cmd/sluice

# Every test: the tools first (unit tests run a real Envoy), unit, then
# end to end on the local real stack (with Knative Serving in the loop),
# then Knative's own ingress conformance suite (25 tests, alpha and beta
# too) and Serving's own suites but for the tests ci.go leaves out, each
# with its reason; and the scale and data-plane benchmarks at a small N,
# to prove they run, and the fleet benchmark at a small F and N.
test: lint tools unit e2e conformance serving-conformance-ci bench-scale-ci bench-dataplane-ci bench-fleet-ci

unit:
	$(GO) test -race -count=1 ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet -tags e2e ./...

lint: vet
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "not gofmt-formatted:"; echo "$$bad"; exit 1; fi

# Binaries of the local stack: kube-apiserver, kube-controller-manager,
# kubectl, etcd, Envoy, helm, grpcurl, promtool (the chart's alert tests), and Knative Serving (its components,
# test images and test suites, from the version go.mod pins).
tools:
	hack/build-tools.sh
	hack/install-envoy.sh
	hack/build-helm.sh
	test -x bin/grpcurl || GOBIN=$(CURDIR)/bin $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
	test -x bin/promtool || GOBIN=$(CURDIR)/bin $(GO) install github.com/prometheus/prometheus/cmd/promtool@v0.316.0
	hack/build-serving.sh

serving:
	hack/build-serving.sh

# One package at a time: each starts real processes on fixed ports. The
# ingress conformance package is tagged e2e too; it has its own target.
e2e: build tools
	$(GO) test -tags e2e -p 1 -count=1 -timeout 40m -v $(E2E_PKGS)

# The long variants of the fault tests (docs/reliability.md): 10,000
# create/update/delete cycles; and WebSockets and gRPC streams through
# Knative Services left silent for longer than Envoy's 5-minute stream
# idle default (make test silences them for seconds). Not part of `make test`.
# The fuzzer through the API server and Envoy for ten minutes (make test
# runs it for 20 seconds).
fuzz-e2e: build tools
	SLUICE_E2E_FUZZ=$(or $(FUZZ),10m) $(GO) test -tags e2e -p 1 -count=1 -timeout 60m -v -run TestFuzzThroughEnvoy ./e2e/

e2e-long: build tools
	SLUICE_E2E_CYCLES=10000 $(GO) test -tags e2e -p 1 -count=1 -timeout 60m -v -run 'TestNoGrowthOverCycles|TestAPIServerOutage' ./e2e/
	SLUICE_E2E_QUIET=5m30s $(GO) test -tags e2e -p 1 -parallel 4 -count=1 -timeout 30m -v -run 'TestNoStreamIdleBound|TestQuietStreams' ./e2e/knative/

# Knative's conformance suite, unmodified: 25 of 25 or it fails. The table
# is printed and saved as JSON in e2e/results/.
conformance: build tools
	$(GO) test -tags e2e -count=1 -parallel 25 -timeout 30m -v ./e2e/conformance/ -args \
	  --ingressClass=sluice.ingress.networking.knative.dev --enable-alpha --enable-beta \
	  --cluster-suffix=cluster.local --ingressendpoint=127.0.0.1 --imagetemplate='{{.Name}}'

# Knative Serving's own tests (conformance/api, conformance/runtime, e2e,
# e2e/tagheader), unmodified, against Serving and Sluice on the stack. Every
# test that does not pass is listed with the capability the stack lacks
# (e2e/cmd/serving-conformance/gaps.go); the table goes to e2e/results/.
serving-conformance: build tools
	$(GO) run ./e2e/cmd/serving-conformance -suite full

serving-conformance-ci: build tools
	$(GO) run ./e2e/cmd/serving-conformance -suite ci

# Figures, not pass/fail: translator benchmarks and the xDS server at
# 1,000 services with 10 simulated Envoys (docs/benchmarks.md has 10,000 and 50).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./translator/
	SLUICE_XDS_SCALE=1000,10 $(GO) test -count=1 -run '^TestScale$$' -v ./xds/

# What one KIngress change costs with N present, on the stack with two real
# Envoys: `make bench-scale N=10000 BINS="before=/tmp/old after=bin/sluice"`
# compares builds on the same objects (docs/benchmarks.md).
N ?= 1000
BINS ?= current=bin/sluice
bench-scale: build tools
	$(GO) run ./e2e/cmd/bench-scale -n $(N) $(foreach b,$(BINS),-bin $(b))

bench-scale-ci: build tools
	$(GO) run ./e2e/cmd/bench-scale -n 100 -creates 5 -updates 3

# What one request costs in the Envoy a build configures, beside the same
# Envoy holding a plain virtual-host configuration of the same routes, same
# rounds (e2e/cmd/bench-scale/dataplane.go): requests/s, p50/p99 and Envoy
# CPU per request for a host Envoy answers itself and one with a real
# backend. `make bench-dataplane N=1000 BINS="before=/tmp/old after=bin/sluice"`.
ROUNDS ?= 6
bench-dataplane: build tools
	$(GO) run ./e2e/cmd/bench-scale -dataplane 8s -rounds $(ROUNDS) -n $(N) $(foreach b,$(BINS),-bin $(b))

# Where a request's cost goes: Envoy's instructions per request (callgrind)
# for variants of the listener's configuration, static, no stack.
bench-dataplane-variants: build tools
	$(GO) run ./e2e/cmd/bench-scale -variants 10s -n $(N)

# What each Envoy costs the controller: F simulated Envoys (e2e/simenvoy,
# real ADS clients in a process of their own) beside the two real ones,
# with N KIngresses: heap per stream, a change reaching every Envoy, the
# same with one Envoy that stopped reading, a controller restart, a join
# (e2e/cmd/bench-scale/fleet.go). `make bench-fleet N=1000 F=100`. No
# memory limits: the chart's 2 GiB for the controller is what it measures.
F ?= 100
bench-fleet: build tools
	$(GO) run ./e2e/cmd/bench-scale -n $(N) -fleet $(F) -creates 10 -limits none $(foreach b,$(BINS),-bin $(b))

bench-fleet-ci: build tools
	$(GO) run ./e2e/cmd/bench-scale -n 100 -fleet 20 -creates 3 -limits none

bench-dataplane-ci: build tools
	$(GO) run ./e2e/cmd/bench-scale -dataplane 2s -rounds 1 -n 100

# The stack with Knative Serving in the background (KUBECONFIG and gateway
# addresses are printed); `go run ./e2e/cmd/stack up` for the bare one.
up: build tools
	$(GO) run ./e2e/cmd/stack up -background -serving

# The stack with Knative Serving and no Sluice of its own, for the Helm
# chart (README: Install on the local stack): the chart's pods run the
# binary of bin/sluice-image.tar (make image) and bin/envoy.
up-chart: build tools
	$(GO) run ./e2e/cmd/stack up -background -serving -chart $(CURDIR)/bin/sluice-image.tar

down:
	$(GO) run ./e2e/cmd/stack down

demo: build tools
	$(GO) run ./e2e/cmd/demo

# deploy/sluice.yaml from the chart (an e2e test checks it is current).
manifest:
	hack/build-helm.sh
	deploy/render-manifest.sh

# The controller image, built here without Docker (hack/image, on
# go-containerregistry): a static binary on an empty base, non-root, OCI
# labels, the same digest for the same commit. Writes bin/sluice-image.tar
# (docker load, podman load, ctr images import, kind load image-archive);
# PUSH=1 also pushes $(IMAGE) with the credentials of ~/.docker/config.json.
image:
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/image/sluice ./cmd/sluice
	$(GO) run ./hack/image -binary bin/image/sluice -version $(VERSION) -tag $(IMAGE) -o bin/sluice-image.tar \
	  -revision "$$(git rev-parse HEAD 2>/dev/null)" -created "$$(git log -1 --format=%cI 2>/dev/null)" $(if $(PUSH),-push $(IMAGE))

clean: down
	rm -rf bin .stack .cache
