"""Demo data: traffic from the real OpenTelemetry SDK, serialised as the awss3exporter
writes it, and a Cost Explorer bill consistent with it. Product code never imports this."""
