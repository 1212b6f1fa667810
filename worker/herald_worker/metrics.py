"""The worker's Prometheus metrics (prefix ``herald_``).

Labels are bounded: ``target`` is a registered target's namespace/name, ``priority`` and
``error_class`` are closed sets; no job ids in labels. Depth, DLQ size and circuit states
are sampled from PostgreSQL on an interval (HERALD_SAMPLE_INTERVAL), not per scrape. Each
process has its own registry, so tests can run several workers in one process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from herald_worker.tracker import Tracker

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BACKOFF_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400)


class _TrackerCollector(Collector):
    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def collect(self) -> Iterable[Any]:
        size = GaugeMetricFamily("herald_tracker_jobs", "Jobs held in the in-memory tracker.")
        size.add_metric([], len(self._tracker))
        yield size
        capacity = GaugeMetricFamily(
            "herald_tracker_capacity_jobs",
            "Capacity of the in-memory tracker (HERALD_TRACKER_SIZE).",
        )
        capacity.add_metric([], self._tracker.maxsize)
        yield capacity


class _DatabaseCounters(Collector):
    """Counters PostgreSQL keeps on every path, whichever process took it (sampled): dead
    letters written (a delivery failure, the lease rescuer, a cancel through the API or the
    CLI, a target deleted by the operator or the CLI) and dead letters replayed (API, CLI,
    DeadLetterReplay). Every worker replica exports the same cluster-wide values: aggregate
    them with max across replicas, not sum."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str, str], int] = {}
        self.replayed: dict[str, int] = {}

    def collect(self) -> Iterable[Any]:
        written = CounterMetricFamily(
            "herald_dead_letters_written",
            "Jobs moved to the dead-letter queue, on every path, by target, error class and "
            "reason (from PostgreSQL, sampled; the same in every replica).",
            labels=["target", "error_class", "reason"],
        )
        for labels, n in sorted(self.written.items()):
            written.add_metric(list(labels), n)
        yield written
        replayed = CounterMetricFamily(
            "herald_dead_letters_replayed",
            "Dead letters put back on the queue by any replay (API, CLI, DeadLetterReplay), "
            "by target (from PostgreSQL, sampled; the same in every replica).",
            labels=["target"],
        )
        for target, n in sorted(self.replayed.items()):
            replayed.add_metric([target], n)
        yield replayed


# The dead-letter series every live target shows from the start (at zero).
DEAD_LETTER_SERIES = (
    ("permanent", "permanent-error"),
    ("transient", "attempts-exhausted"),
    ("unknown", "attempts-exhausted"),
)


@dataclasses.dataclass(frozen=True)
class PerJob:
    """The children of the series every delivery updates, for one target and priority."""

    claimed: Counter
    attempts: Counter
    success: Histogram
    """Attempt duration of a success."""
    failure: Histogram
    delivered: Counter
    latency: Histogram


class Metrics:
    def __init__(self, tracker: Tracker) -> None:
        r = self.registry = CollectorRegistry()
        self._per_job: dict[tuple[str, str], PerJob] = {}
        t = ("target",)
        self.enqueued = Counter(
            "herald_jobs_enqueued",
            "Jobs accepted by this worker's API.",
            ("target", "priority"),
            registry=r,
        )
        self.ingest_group_size = Histogram(
            "herald_ingest_group_size",
            "Single-job enqueues written together in one transaction (group commit, "
            "HERALD_INGEST_MAX_GROUP).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
            registry=r,
        )
        self.duplicates = Counter(
            "herald_jobs_duplicate",
            "Submissions answered with an existing job (idempotency key).",
            t,
            registry=r,
        )
        self.claimed = Counter(
            "herald_jobs_claimed", "Jobs claimed for delivery.", ("target", "priority"), registry=r
        )
        self.attempts = Counter(
            "herald_delivery_attempts", "Delivery attempts made.", t, registry=r
        )
        self.delivered = Counter(
            "herald_jobs_delivered", "Jobs delivered.", ("target", "priority"), registry=r
        )
        self.failures = Counter(
            "herald_delivery_failures",
            "Failed delivery attempts.",
            ("target", "error_class"),
            registry=r,
        )
        self.retries = Counter(
            "herald_retries_scheduled",
            "Failed jobs scheduled to try again.",
            ("target", "error_class"),
            registry=r,
        )
        self.refunds = Counter(
            "herald_attempts_refunded",
            "Failed attempts given back because the target's circuit is "
            "open (an outage burns no attempts).",
            t,
            registry=r,
        )
        self.backoff = Histogram(
            "herald_retry_backoff_seconds",
            "Delay before the next attempt of a failed job.",
            t,
            buckets=BACKOFF_BUCKETS,
            registry=r,
        )
        self.database_counters = _DatabaseCounters()
        r.register(self.database_counters)
        self.retry_successes = Counter(
            "herald_retry_successes",
            "Jobs delivered after at least one failed attempt (a retry that worked).",
            t,
            registry=r,
        )
        self.dead_letter_reads = Counter(
            "herald_dead_letter_reads",
            "Reads of the dead-letter queue through the API, by operation (list, show, stats).",
            ("operation",),
            registry=r,
        )
        self.duration = Histogram(
            "herald_delivery_duration_seconds",
            "Time of one delivery attempt (request to response).",
            ("target", "outcome"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "herald_delivery_latency_seconds",
            "Time from enqueue to successful delivery.",
            ("target", "priority"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.trips = Counter(
            "herald_circuit_trips", "Times a target's circuit opened.", t, registry=r
        )
        self.recoveries = Counter(
            "herald_circuit_recoveries",
            "Times a target's half-open circuit closed again.",
            t,
            registry=r,
        )
        self.gone = Counter(
            "herald_targets_auto_paused",
            "Targets paused because their receiver answered 410 Gone.",
            t,
            registry=r,
        )
        self.disabled = Counter(
            "herald_targets_disabled",
            "Targets disabled after their deliveries failed continuously for their "
            "disable period (HERALD_DISABLE_AFTER or spec.disableAfterSeconds).",
            t,
            registry=r,
        )
        self.lost_leases = Counter(
            "herald_leases_lost",
            "Deliveries whose lease this worker lost before settling "
            "them (another worker may deliver them again).",
            registry=r,
        )
        self.rescued = Counter(
            "herald_jobs_rescued",
            "Jobs whose lease had expired, claimed back by the rescuer.",
            registry=r,
        )
        self.in_flight = Gauge(
            "herald_deliveries_in_flight", "Deliveries in flight in this process.", registry=r
        )
        self.ready = Gauge(
            "herald_worker_ready",
            "1 when this worker reaches PostgreSQL and is delivering.",
            registry=r,
        )
        self.depth = Gauge(
            "herald_queue_depth",
            "Jobs per target, priority and state (sampled).",
            ("target", "priority", "state"),
            registry=r,
        )
        self.oldest_ready = Gauge(
            "herald_queue_oldest_ready_age_seconds",
            "Age of the oldest job ready to run, per target (sampled; 0 while the target "
            "is paused or its circuit open: its jobs are not ready).",
            t,
            registry=r,
        )
        self.dlq_size = Gauge(
            "herald_dead_letters",
            "Dead letters not yet replayed, per target (sampled).",
            t,
            registry=r,
        )
        self.circuit = Gauge(
            "herald_circuit_state",
            "1 for the current circuit state of each target (sampled).",
            ("target", "state"),
            registry=r,
        )
        self.paused = Gauge(
            "herald_target_paused",
            "1 when a target holds its jobs (paused, or 410 Gone) (sampled).",
            t,
            registry=r,
        )
        # Capacity (herald_queue.capacity): fill of spec.capacity and HERALD_QUEUE_CAPACITY.
        self.capacity_ratio = Gauge(
            "herald_queue_capacity_ratio",
            "Waiting jobs over spec.capacity.jobs, per target with a capacity (sampled; "
            "warning from 0.8, full at 1).",
            t,
            registry=r,
        )
        self.capacity_jobs = Gauge(
            "herald_queue_capacity_jobs", "spec.capacity.jobs, per target with one.", t, registry=r
        )
        self.capacity_crossings = Counter(
            "herald_queue_capacity_crossings",
            "Times a target's waiting jobs rose to a capacity level (warning: 80 %, full: "
            "100 %), counted by each worker at its sample.",
            ("target", "level"),
            registry=r,
        )
        self.total_capacity_ratio = Gauge(
            "herald_queue_total_capacity_ratio",
            "Waiting jobs of all targets over HERALD_QUEUE_CAPACITY (sampled; absent when unset).",
            registry=r,
        )
        self.total_capacity_jobs = Gauge(
            "herald_queue_total_capacity_jobs",
            "HERALD_QUEUE_CAPACITY (0: none).",
            registry=r,
        )
        self.total_capacity_crossings = Counter(
            "herald_queue_total_capacity_crossings",
            "Times all waiting jobs rose to a level of HERALD_QUEUE_CAPACITY.",
            ("level",),
            registry=r,
        )
        self.refused = Counter(
            "herald_jobs_refused",
            "Jobs refused by a hard capacity limit (429, or 503 to Alertmanager).",
            t,
            registry=r,
        )
        self.tracker_lookups = Counter(
            "herald_tracker_lookups",
            "Job lookups by the API, answered from the in-memory "
            "tracker (hit) or the database (miss).",
            ("result",),
            registry=r,
        )
        self.api_requests = Counter(
            "herald_api_requests", "HTTP API requests.", ("route", "method", "status"), registry=r
        )
        self.api_duration = Histogram(
            "herald_api_request_duration_seconds",
            "HTTP API request duration.",
            ("route",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.api_auth_reviews = Counter(
            "herald_api_auth_reviews",
            "Reviews asked of the Kubernetes API (HERALD_API_AUTH=kubernetes), by review "
            "(TokenReview, SubjectAccessReview) and result (allowed, denied, error: no answer "
            "in time, the request got 503); cached answers are not counted.",
            ("review", "result"),
            registry=r,
        )
        for result in ("hit", "miss"):
            self.tracker_lookups.labels(result)
        for review in ("TokenReview", "SubjectAccessReview"):
            for result in ("allowed", "denied", "error"):
                self.api_auth_reviews.labels(review, result)
        for level in ("warning", "full"):
            self.total_capacity_crossings.labels(level)
        for operation in ("list", "show", "stats"):
            self.dead_letter_reads.labels(operation)
        r.register(_TrackerCollector(tracker))

    def per_job(self, ref: str, priority: str) -> PerJob:
        """The series a delivery of ``ref`` at ``priority`` updates, looked up once (a
        ``labels()`` call takes a lock and builds a key: five of them per job)."""
        key = (ref, priority)
        children = self._per_job.get(key)
        if children is None:
            children = self._per_job[key] = PerJob(
                claimed=self.claimed.labels(ref, priority),
                attempts=self.attempts.labels(ref),
                success=self.duration.labels(ref, "success"),
                failure=self.duration.labels(ref, "failure"),
                delivered=self.delivered.labels(ref, priority),
                latency=self.latency.labels(ref, priority),
            )
        return children

    def initialize_target(self, ref: str) -> None:
        """Create every series of a target at zero, so dashboards and alert rules (rates,
        absent()) see it from the start rather than after its first event."""
        for priority in ("high", "medium", "low"):
            for family in (self.enqueued, self.claimed, self.delivered, self.latency):
                family.labels(ref, priority)
        for error_class in ("transient", "permanent", "unknown"):
            self.failures.labels(ref, error_class)
            self.retries.labels(ref, error_class)
        for outcome in ("success", "failure"):
            self.duration.labels(ref, outcome)
        for family in (
            self.duplicates,
            self.attempts,
            self.refunds,
            self.backoff,
            self.trips,
            self.recoveries,
            self.gone,
            self.disabled,
            self.refused,
            self.retry_successes,
        ):
            family.labels(ref)
