package gatehouse

import (
	"io"
	"log/slog"

	"github.com/gatehouse-proxy/gatehouse/config"
)

// NewLogger returns the logger a Log config asks for, writing to w.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level)) // validated; "" is info
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
