-- Dead letters keep the runAt of a job that died before its first attempt (cancelled,
-- or its target deleted, while it waited), so a replay does not deliver it early.

ALTER TABLE herald.dead_letters ADD COLUMN run_at timestamptz;

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
    RETURN NULL;
END
$$;
