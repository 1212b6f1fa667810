-- 0006: counters of dead-letter writes (per target, error class and reason) and of replays
-- (per target), kept by PostgreSQL on every path, whichever process takes it: a delivery
-- failure or the lease rescuer in a worker, a cancel through the API or the CLI, the
-- deletion of a target by the operator or `herald targets`, a replay through the API, the
-- CLI or a DeadLetterReplay. Workers export them (herald_dead_letters_written_total,
-- herald_dead_letters_replayed_total). They go with their target's row (tombstone purge).

CREATE TABLE herald.dead_letter_counts (
    target_id  integer NOT NULL REFERENCES herald.targets (id) ON DELETE CASCADE,
    error_type text NOT NULL CHECK (error_type IN ('transient', 'permanent', 'unknown')),
    reason     text NOT NULL CHECK (reason IN
               ('permanent-error', 'attempts-exhausted', 'target-deleted', 'cancelled')),
    n          bigint NOT NULL CHECK (n >= 0),
    PRIMARY KEY (target_id, error_type, reason)
);

ALTER TABLE herald.targets ADD COLUMN replayed_total bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION herald.record_dead_letter() RETURNS trigger
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
