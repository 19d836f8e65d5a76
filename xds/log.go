package xds

import "go.uber.org/zap"

// cpLogger adapts zap to go-control-plane's logger. The library logs every
// watch it opens at info level, which is noise at our scale, so info goes to
// debug.
type cpLogger struct{ s *zap.SugaredLogger }

func (l cpLogger) Debugf(format string, args ...any) { l.s.Debugf(format, args...) }
func (l cpLogger) Infof(format string, args ...any)  { l.s.Debugf(format, args...) }
func (l cpLogger) Warnf(format string, args ...any)  { l.s.Warnf(format, args...) }
func (l cpLogger) Errorf(format string, args ...any) { l.s.Errorf(format, args...) }
