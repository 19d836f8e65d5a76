// Package conformance runs Knative's own ingress conformance suite
// (test/conformance/ingress of knative.dev/networking, unmodified) against
// Sluice and Envoy on the local real stack (package e2e/stack).
//
// The test is behind the e2e build tag and needs root:
//
//	go test -tags=e2e -count=1 -timeout 30m ./e2e/conformance/ -args \
//	  --ingressClass=sluice.ingress.networking.knative.dev \
//	  --enable-alpha --enable-beta --cluster-suffix=cluster.local \
//	  --ingressendpoint=127.0.0.1 --imagetemplate='{{.Name}}'
//
// Flags left out get exactly these values, and --kubeconfig is the stack's.
// TestMain prints a table of the 25 tests and writes it as JSON to
// e2e/results/; the run fails unless every run of the suite passed 25/25.
// Reading the suite's output into results (results.go) is tested without the
// tag or the stack.
package conformance
