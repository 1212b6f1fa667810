"""The worker's HTTP API (aiohttp): jobs, queue statistics, dead letters, the
Alertmanager receiver, probes, /metrics and the OpenAPI document."""
