package main

// gaps lists, by package and test, the tests of Serving's suite that do
// not pass on this stack, each with the capability of a real cluster that
// the stack lacks. Everything else must pass.
var gaps = map[string]string{
	"test/e2e.TestEgressTraffic": "egress to the internet: pods here reach only this machine (the cluster DNS resolves no outside name, and no traffic may leave the machine)",
}

// cgroupTests need the containers' cgroups: on a machine where the pod
// runner cannot make them (kubelet.CheckCgroups), they are gaps too.
var cgroupTests = map[string]bool{
	"test/conformance/api/v1.TestCustomResourcesLimits":     true,
	"test/conformance/runtime.TestMustHaveCgroupConfigured": true,
	"test/conformance/runtime.TestShouldHaveCgroupReadOnly": true,
}
