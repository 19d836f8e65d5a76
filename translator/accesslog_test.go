package translator

import (
	"strings"
	"testing"
)

func TestCheckLogFormat(t *testing.T) {
	for _, f := range []string{
		"", "plain text", "%START_TIME%", "[%START_TIME(%Y-%m-%d)%] %REQ(:PATH):64% 100%%",
		"%REQ(X-FORWARDED-FOR)% %RESP(content-type)% %DYNAMIC_METADATA(a:b)%", "%%%RESPONSE_CODE%%%",
		strings.Join(LogOperators(), " "),
	} {
		if err := checkLogFormat(f); err != nil {
			t.Errorf("%q: %v", f, err)
		}
	}
	for f, want := range map[string]string{
		"100% done":          `"%" is not a command operator`,
		"%NOPE%":             `"%NOPE" is not a command operator`,
		"%req(:path)%":       `"%" is not a command operator`,
		"%REQ%":              "%REQ needs an argument",
		"%REQ()%":            "%REQ() needs an argument",
		"%REQ(:PATH%":        "%REQ( is not closed",
		"%REQ(:PATH):x%":     "must be digits",
		"%RESPONSE_CODE":     "%RESPONSE_CODE is not closed with %",
		"%START_TIME%%":      "is not a command operator",
		"%START_TIME%  %ROU": `"%ROU" is not a command operator`,
	} {
		err := checkLogFormat(f)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", f, err, want)
		}
	}
}
