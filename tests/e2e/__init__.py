"""Chart, image and (later) Prometheus/Alertmanager tests that run real external tools."""
