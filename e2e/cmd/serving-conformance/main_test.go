package main

import (
	"bytes"
	"strings"
	"testing"
)

// A failure gaps.go does not explain is repeated after the table with its
// last lines; one it explains, and passes, are not.
func TestPrintTableRepeatsUnexplainedFailures(t *testing.T) {
	rs := []result{
		{Package: "test/e2e", Test: "TestHelloWorld", Result: "PASS"},
		{Package: "test/e2e", Test: "TestExplained", Result: "FAIL", Gap: "a gap", Reason: "explained reason"},
		{Package: "test/e2e", Test: "TestWebSocket", Result: "FAIL", Reason: "websocket.go:80: dial failed\nwebsocket.go:81: 503"},
	}
	var b bytes.Buffer
	printTable(&b, 1, 1, rs)
	out := b.String()
	want := "e2e TestWebSocket failed; its last lines:\nwebsocket.go:80: dial failed\nwebsocket.go:81: 503\n"
	if i := strings.Index(out, want); i < 0 || i < strings.LastIndex(out, "UNEXPLAINED FAILURE") {
		t.Errorf("the unexplained failure's lines are not after the table:\n%s", out)
	}
	if strings.Contains(out, "explained reason") || strings.Contains(out, "TestHelloWorld failed") {
		t.Errorf("an explained failure or a pass is repeated:\n%s", out)
	}
}
