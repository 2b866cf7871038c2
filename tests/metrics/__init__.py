"""Tests of lunad's metrics as others see them: Prometheus config, alerts, Grafana dashboard."""
