"""The worker: Herald's data plane. Claims jobs from the PostgreSQL queue, delivers them to
their publishing targets, settles the outcome, and serves the HTTP API and /metrics."""
