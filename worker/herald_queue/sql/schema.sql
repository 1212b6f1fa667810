-- Herald's canonical schema: what a database looks like after every migration in
-- migrations/ has run. A test applies both to fresh databases and compares the catalogs.
-- Everything lives in the schema "herald" so Herald can share a database.

CREATE SCHEMA herald;

-- Which migrations have run (written by `herald migrate`, under an advisory lock).
CREATE TABLE herald.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The target registry: one row per PublishingTarget, written by the operator (or by
-- `herald targets apply` locally), next to the live state every worker shares. A deleted
-- target stays as a tombstone (deleted_at set) while jobs may still reference it, so its
-- late jobs reach the DLQ under its name; the retention cleaner removes it later.
CREATE TABLE herald.targets (
    id                  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace           text NOT NULL,
    name                text NOT NULL,
    type                text NOT NULL CHECK (type IN ('webhook', 'slack', 'pagerduty')),
    -- The PublishingTarget spec with defaults applied. Never secrets: only secretRef.
    config              jsonb NOT NULL,
    generation          bigint NOT NULL DEFAULT 0,
    paused              boolean NOT NULL DEFAULT false,
    -- Set by a worker when the receiver answered 410 Gone (auto_paused_cause 'gone') or
    -- the target failed continuously for its disable period ('failing'); cleared by a
    -- spec change, `herald targets resume` or `herald targets enable`.
    auto_paused_reason  text,
    auto_paused_at      timestamptz,
    -- Copies of the spec fields the SQL below needs, typed and checked.
    max_attempts        integer NOT NULL CHECK (max_attempts >= 1),
    failure_threshold   integer NOT NULL CHECK (failure_threshold >= 1),
    open_seconds        double precision NOT NULL CHECK (open_seconds > 0),
    half_open_probes    integer NOT NULL CHECK (half_open_probes >= 1),
    rate_per_second     double precision CHECK (rate_per_second > 0),
    rate_burst          integer CHECK (rate_burst >= 1),
    -- Circuit breaker, shared by all worker replicas.
    circuit_state       text NOT NULL DEFAULT 'closed'
                        CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    circuit_changed_at  timestamptz,
    circuit_open_until  timestamptz,
    circuit_trips_total bigint NOT NULL DEFAULT 0,
    circuit_recoveries_total bigint NOT NULL DEFAULT 0,
    -- Token bucket of the rate limit, shared by all worker replicas.
    rate_tokens         double precision,
    rate_updated_at     timestamptz,
    -- Counters and last outcomes, for the PublishingTarget status.
    delivered_total     bigint NOT NULL DEFAULT 0,
    failed_attempts_total bigint NOT NULL DEFAULT 0,
    dead_lettered_total bigint NOT NULL DEFAULT 0,
    last_delivery_at    timestamptz,
    last_error          text,
    last_error_class    text CHECK (last_error_class IN ('transient', 'permanent', 'unknown')),
    last_error_at       timestamptz,
    registered_at       timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    -- 0004: the first failed attempt of the current failure streak (NULL after a
    -- success), and why a worker holds the jobs (with auto_paused_reason).
    failing_since       timestamptz,
    auto_paused_cause   text CHECK (auto_paused_cause IN ('gone', 'failing')),
    -- 0006: dead letters of this target put back on the queue, by any replay (API, CLI,
    -- DeadLetterReplay); exported as herald_dead_letters_replayed_total.
    replayed_total      bigint NOT NULL DEFAULT 0,
    CONSTRAINT targets_open_until_check
        CHECK ((circuit_state = 'open') = (circuit_open_until IS NOT NULL)),
    CONSTRAINT targets_rate_check CHECK ((rate_per_second IS NULL) = (rate_burst IS NULL)),
    CONSTRAINT targets_auto_pause_check
        CHECK ((auto_paused_reason IS NULL) = (auto_paused_at IS NULL))
);

-- A few rows updated by every batch of completions: vacuumed once ten dead row versions
-- are counted whatever the table's size (only VACUUM records the space page pruning
-- frees, and with the default, 50 + 20 %, the table grew sevenfold before its first
-- autovacuum), with half of each page left free for same-page (HOT) updates (migration
-- 0010; `herald bench --soak`).
ALTER TABLE herald.targets SET (
    fillfactor = 50,
    autovacuum_vacuum_threshold = 10,
    autovacuum_vacuum_scale_factor = 0
);

-- One live target per namespace/name; tombstones do not count.
CREATE UNIQUE INDEX targets_namespace_name_key ON herald.targets (namespace, name)
    WHERE deleted_at IS NULL;

-- The queue. Live jobs and, until the retention cleaner removes them, finished ones.
-- target_id has no foreign key on purpose (a per-row check and lock on the hot path):
-- target rows are never deleted while jobs reference them (see herald.targets), and the
-- jobs of a deleted target are moved to the DLQ by its deletion and by the sweeper.
-- The payload is json, not jsonb: stored and delivered byte for byte as submitted, and
-- cheaper to write and read (Herald never queries inside it).
CREATE TABLE herald.jobs (
    id               uuid PRIMARY KEY,
    -- Enqueue order, for FIFO among equal deadlines and for ordering-key chains.
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    target_id        integer NOT NULL,
    priority         text NOT NULL CHECK (priority IN ('high', 'medium', 'low')),
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'retrying', 'succeeded', 'dead')),
    payload          json NOT NULL,
    idempotency_key  text,
    ordering_key     text,
    -- True while an earlier job with the same ordering key is unfinished.
    held             boolean NOT NULL DEFAULT false,
    -- Earliest time of the next attempt.
    run_at           timestamptz NOT NULL,
    -- run_at plus the priority's latency budget: claims take the earliest deadline.
    deadline         timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    leased_by        text,
    lease_expires_at timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    last_error       text,
    last_error_class text CHECK (last_error_class IN ('transient', 'permanent', 'unknown')),
    last_http_status integer,
    -- Why the job is dead; the dead-letter trigger copies it into dead_letters.reason.
    dead_reason      text CHECK (dead_reason IN
                     ('permanent-error', 'attempts-exhausted', 'target-deleted', 'cancelled')),
    -- With an idempotency key: a digest of what the submission asked for (payload, priority,
    -- ordering key, runAt), so a later one with the same key and other parameters is refused
    -- (herald_model.submission.JobRequest.request_hash). NULL without a key (and for jobs
    -- submitted before migration 0002).
    request_hash     text,
    -- The producer's W3C trace context (its traceparent and tracestate headers, validated
    -- by herald_core.trace_context): each attempt's span continues that trace and the
    -- receiver gets it on. NULL without one (and for jobs submitted before migration 0008).
    traceparent      text CHECK (length(traceparent) = 55),
    tracestate       text CHECK (length(tracestate) <= 512),
    CONSTRAINT jobs_lease_check
        CHECK ((state = 'running') = (leased_by IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT jobs_finished_check
        CHECK ((state IN ('succeeded', 'dead')) = (finished_at IS NOT NULL)),
    CONSTRAINT jobs_dead_check CHECK ((state = 'dead') = (dead_reason IS NOT NULL)),
    CONSTRAINT jobs_retrying_check CHECK (state <> 'retrying' OR attempts > 0),
    CONSTRAINT jobs_held_check
        CHECK (NOT held OR (ordering_key IS NOT NULL AND state IN ('queued', 'retrying')))
);

-- The claim: per target, earliest deadline first, among jobs that may run.
CREATE INDEX jobs_claim_idx ON herald.jobs (target_id, deadline, seq)
    WHERE state IN ('queued', 'retrying') AND NOT held;
-- A duplicate enqueue finds the existing job.
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON herald.jobs (target_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The unfinished jobs of an ordering-key chain, oldest first.
CREATE INDEX jobs_ordering_chain_idx ON herald.jobs (target_id, ordering_key, seq)
    WHERE ordering_key IS NOT NULL AND state IN ('queued', 'retrying', 'running');
-- The lease rescuer and the per-target count of deliveries in flight.
CREATE INDEX jobs_running_idx ON herald.jobs (target_id, lease_expires_at)
    WHERE state = 'running';
-- The retention cleaner.
CREATE INDEX jobs_finished_idx ON herald.jobs (finished_at)
    WHERE state IN ('succeeded', 'dead');

-- The dead-letter queue: what failed, why, with everything needed to replay it even
-- after the job row itself has been removed by retention.
CREATE TABLE herald.dead_letters (
    id               uuid PRIMARY KEY,
    job_id           uuid NOT NULL,
    fingerprint      text,
    target_namespace text NOT NULL,
    target_name      text NOT NULL,
    target_type      text NOT NULL,
    payload          json NOT NULL,
    target_config    jsonb NOT NULL,
    error_message    text NOT NULL,
    error_type       text NOT NULL CHECK (error_type IN ('transient', 'permanent', 'unknown')),
    reason           text NOT NULL CHECK (reason IN
                     ('permanent-error', 'attempts-exhausted', 'target-deleted', 'cancelled')),
    http_status      integer,
    retry_count      integer NOT NULL CHECK (retry_count >= 0),
    last_retry_at    timestamptz,
    priority         text NOT NULL CHECK (priority IN ('high', 'medium', 'low')),
    idempotency_key  text,
    ordering_key     text,
    job_created_at   timestamptz NOT NULL,
    failed_at        timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    replayed         boolean NOT NULL DEFAULT false,
    replayed_at      timestamptz,
    replay_result    text CHECK (replay_result IN ('queued', 'target-missing')),
    replayed_by      text,
    -- The runAt of a job that died before its first attempt (cancelled, or its target
    -- deleted, while it waited for its time); a replay keeps it if it is still ahead.
    run_at           timestamptz,
    -- The job's W3C trace context (see herald.jobs), given back to it by a replay.
    traceparent      text CHECK (length(traceparent) = 55),
    tracestate       text CHECK (length(tracestate) <= 512),
    -- replayed: back on the queue. A replay that found no target marks the entry
    -- target-missing and leaves it unreplayed, for a later replay.
    CONSTRAINT dead_letters_replay_check
        CHECK (replayed = (replay_result IS NOT DISTINCT FROM 'queued')
               AND (replay_result IS NULL) = (replayed_at IS NULL))
);

-- Dead letters written, per target, error class and reason, on every path (the trigger
-- below); exported as herald_dead_letters_written_total. They go with their target's row.
CREATE TABLE herald.dead_letter_counts (
    target_id  integer NOT NULL REFERENCES herald.targets (id) ON DELETE CASCADE,
    error_type text NOT NULL CHECK (error_type IN ('transient', 'permanent', 'unknown')),
    reason     text NOT NULL CHECK (reason IN
               ('permanent-error', 'attempts-exhausted', 'target-deleted', 'cancelled')),
    n          bigint NOT NULL CHECK (n >= 0),
    PRIMARY KEY (target_id, error_type, reason)
);

CREATE INDEX dead_letters_target_name_idx
    ON herald.dead_letters (target_namespace, target_name, failed_at DESC);
CREATE INDEX dead_letters_error_type_idx ON herald.dead_letters (error_type, failed_at DESC);
CREATE INDEX dead_letters_priority_idx ON herald.dead_letters (priority, failed_at DESC);
CREATE INDEX dead_letters_failed_at_idx ON herald.dead_letters (failed_at DESC);
CREATE INDEX dead_letters_unreplayed_idx ON herald.dead_letters (failed_at DESC)
    WHERE NOT replayed;
CREATE INDEX dead_letters_fingerprint_idx ON herald.dead_letters (fingerprint)
    WHERE fingerprint IS NOT NULL;
CREATE INDEX dead_letters_job_id_idx ON herald.dead_letters (job_id);
CREATE INDEX dead_letters_replayed_by_idx ON herald.dead_letters (replayed_by)
    WHERE replayed_by IS NOT NULL;

-- Every job that becomes dead gets its dead letter here, whichever path killed it
-- (a failure, a cancel, the lease rescuer, the deletion of its target), and its target's
-- dead-letter counter moves.
CREATE FUNCTION herald.record_dead_letter() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO herald.dead_letters (
        id, job_id, fingerprint, target_namespace, target_name, target_type, payload,
        target_config, error_message, error_type, reason, http_status, retry_count,
        last_retry_at, priority, idempotency_key, ordering_key, job_created_at, failed_at,
        run_at)
    SELECT gen_random_uuid(), NEW.id, coalesce(NEW.payload ->> 'fingerprint',
               NEW.payload -> 'alerts' -> 0 ->> 'fingerprint'), t.namespace, t.name,
           t.type, NEW.payload, t.config, coalesce(NEW.last_error, NEW.dead_reason),
           coalesce(NEW.last_error_class, 'permanent'), NEW.dead_reason, NEW.last_http_status,
           NEW.attempts, NEW.started_at, NEW.priority, NEW.idempotency_key, NEW.ordering_key,
           NEW.created_at, NEW.finished_at, CASE WHEN NEW.attempts = 0 THEN NEW.run_at END
    FROM herald.targets t
    WHERE t.id = NEW.target_id;
    UPDATE herald.targets SET dead_lettered_total = dead_lettered_total + 1
    WHERE id = NEW.target_id;
    INSERT INTO herald.dead_letter_counts AS c (target_id, error_type, reason, n)
    VALUES (NEW.target_id, coalesce(NEW.last_error_class, 'permanent'), NEW.dead_reason, 1)
    ON CONFLICT (target_id, error_type, reason) DO UPDATE SET n = c.n + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_record_dead_letter
    AFTER UPDATE OF state ON herald.jobs
    FOR EACH ROW WHEN (NEW.state = 'dead' AND OLD.state <> 'dead')
    EXECUTE FUNCTION herald.record_dead_letter();

-- 0007: every delivery attempt on record (GET /v1/jobs/{id}/attempts, `herald jobs show`,
-- a dead letter's detail). One row per attempt, written by the statement that settles it
-- (no extra round trip): when, how long, which worker, the HTTP status, the error class and
-- message, the first bytes of the answer, the Retry-After honoured and what was decided.
-- Partitioned by the day it was recorded (UTC): the retention cleaner drops whole days
-- (herald_queue/attempts.py) instead of deleting rows. Days are created ahead by `herald
-- migrate` and the cleaner (herald.create_attempt_partitions); a row whose day has no
-- partition yet lands in attempts_default, so an insert never fails for want of one.
CREATE TABLE herald.attempts (
    seq                 bigserial,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    job_id              uuid NOT NULL,
    attempt             integer NOT NULL CHECK (attempt >= 0),
    target_id           integer,
    worker              text,
    -- The worker's clock when the request went out, and how long until the answer.
    started_at          timestamptz,
    duration_seconds    double precision,
    http_status         integer,
    error_class         text CHECK (error_class IN ('transient', 'permanent', 'unknown')),
    message             text,
    -- The first characters of the receiver's answer.
    response            text,
    -- The Retry-After the receiver asked for (seconds, capped), honoured by retry_at.
    retry_after_seconds double precision,
    decision            text NOT NULL CHECK (decision IN
                        ('succeeded', 'retry', 'dead', 'circuit-open', 'withheld',
                         'target-paused', 'lease-lost')),
    retry_at            timestamptz
) PARTITION BY RANGE (recorded_at);

CREATE TABLE herald.attempts_default PARTITION OF herald.attempts DEFAULT;

CREATE INDEX attempts_job_idx ON herald.attempts (job_id, seq);

-- Creates the day partitions (UTC) from first_day for days days that do not exist yet;
-- rows the default partition holds for such a day move into it. Returns how many it made.
CREATE FUNCTION herald.create_attempt_partitions(first_day date, days integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date;
    part text;
    made integer := 0;
BEGIN
    FOR i IN 0 .. days - 1 LOOP
        day := first_day + i;
        part := 'attempts_p' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('herald.' || part) IS NOT NULL;
        EXECUTE format('CREATE TABLE herald.%I (LIKE herald.attempts INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM herald.attempts_default WHERE recorded_at '
                       '>= %L AND recorded_at < %L RETURNING *) INSERT INTO herald.%I SELECT '
                       '* FROM moved', day::timestamp AT TIME ZONE 'UTC',
                       (day + 1)::timestamp AT TIME ZONE 'UTC', part);
        EXECUTE format('ALTER TABLE herald.attempts ATTACH PARTITION herald.%I FOR VALUES '
                       'FROM (%L) TO (%L)', part, day::timestamp AT TIME ZONE 'UTC',
                       (day + 1)::timestamp AT TIME ZONE 'UTC');
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

-- A dead letter keeps its job's trace context (herald_core.trace_context), and a replay
-- gives it back to the job: the replayed attempts join the producer's trace.
CREATE FUNCTION herald.keep_dead_letter_trace() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT j.traceparent, j.tracestate INTO NEW.traceparent, NEW.tracestate
    FROM herald.jobs j
    WHERE j.id = NEW.job_id;
    RETURN NEW;
END
$$;

CREATE TRIGGER dead_letters_keep_trace
    BEFORE INSERT ON herald.dead_letters
    FOR EACH ROW EXECUTE FUNCTION herald.keep_dead_letter_trace();
