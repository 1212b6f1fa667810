-- Queries of the target registry and of the per-target shared state.

-- name: upsert_target
-- Registers a PublishingTarget or brings its row in step with a new spec. A spec change
-- (new generation or config) clears a pause the worker set (after a 410 Gone, or a
-- disable after days of failures) and starts the failure streak over.
INSERT INTO herald.targets AS t (namespace, name, type, config, generation, paused,
                                 max_attempts, failure_threshold, open_seconds,
                                 half_open_probes, rate_per_second, rate_burst)
VALUES (%(namespace)s, %(name)s, %(type)s, %(config)s, %(generation)s, %(paused)s,
        %(max_attempts)s, %(failure_threshold)s, %(open_seconds)s, %(half_open_probes)s,
        %(rate_per_second)s, %(rate_burst)s)
ON CONFLICT (namespace, name) WHERE deleted_at IS NULL DO UPDATE
SET type = EXCLUDED.type,
    config = EXCLUDED.config,
    generation = EXCLUDED.generation,
    paused = EXCLUDED.paused,
    max_attempts = EXCLUDED.max_attempts,
    failure_threshold = EXCLUDED.failure_threshold,
    open_seconds = EXCLUDED.open_seconds,
    half_open_probes = EXCLUDED.half_open_probes,
    rate_per_second = EXCLUDED.rate_per_second,
    rate_burst = EXCLUDED.rate_burst,
    rate_tokens = CASE WHEN EXCLUDED.rate_burst IS NULL THEN NULL
                       ELSE least(t.rate_tokens, EXCLUDED.rate_burst) END,
    auto_paused_reason = CASE WHEN t.generation <> EXCLUDED.generation
                                   OR t.config <> EXCLUDED.config THEN NULL
                              ELSE t.auto_paused_reason END,
    auto_paused_at = CASE WHEN t.generation <> EXCLUDED.generation
                               OR t.config <> EXCLUDED.config THEN NULL
                          ELSE t.auto_paused_at END,
    auto_paused_cause = CASE WHEN t.generation <> EXCLUDED.generation
                                  OR t.config <> EXCLUDED.config THEN NULL
                             ELSE t.auto_paused_cause END,
    failing_since = CASE WHEN t.generation <> EXCLUDED.generation
                              OR t.config <> EXCLUDED.config THEN NULL
                         ELSE t.failing_since END,
    updated_at = now()
RETURNING t.id, (t.xmax = 0) AS created, pg_notify('herald_targets', t.id::text) IS NULL
          AS notified;

-- name: list_targets
SELECT t.id, t.namespace, t.name, t.type, t.config, t.generation, t.paused,
       t.auto_paused_reason, t.auto_paused_at, t.auto_paused_cause, t.failing_since,
       t.circuit_state, t.consecutive_failures,
       t.circuit_changed_at, t.circuit_open_until, t.circuit_trips_total,
       t.circuit_recoveries_total, t.delivered_total, t.failed_attempts_total,
       t.dead_lettered_total, t.last_delivery_at, t.last_error, t.last_error_class,
       t.last_error_at, t.registered_at, t.updated_at
FROM herald.targets t
WHERE t.deleted_at IS NULL
  AND (%(namespace)s::text IS NULL OR t.namespace = %(namespace)s)
  AND (%(name)s::text IS NULL OR t.name = %(name)s)
ORDER BY t.namespace, t.name;

-- name: find_target_namespaces
SELECT id, namespace FROM herald.targets
WHERE name = %(name)s AND deleted_at IS NULL
ORDER BY namespace;

-- name: mark_target_deleted
-- The target becomes a tombstone: nothing is claimed for it any more, its name is free
-- for a new target, and its jobs still find its name and type for their dead letters.
-- Workers hear of it at once (their name caches are dropped, enqueues refused).
UPDATE herald.targets SET deleted_at = now(), updated_at = now()
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING id, pg_notify('herald_targets', id::text) IS NULL AS notified;

-- name: purge_tombstones
-- Deleted targets no job refers to any more (finished jobs are gone after the job
-- retention period, which the cutoff includes).
DELETE FROM herald.targets t
WHERE t.deleted_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(older_than)s)
  AND NOT EXISTS (SELECT 1 FROM herald.jobs j
                  WHERE j.target_id = t.id AND j.state IN ('queued', 'retrying', 'running'))
RETURNING t.id;

-- name: auto_pause_target
-- The receiver said the endpoint is gone (410): hold every job of the target until its
-- spec changes or someone resumes it.
UPDATE herald.targets
SET auto_paused_reason = %(reason)s, auto_paused_at = now(), auto_paused_cause = 'gone'
WHERE id = %(id)s AND auto_paused_reason IS NULL
RETURNING id;

-- name: resume_target
UPDATE herald.targets
SET auto_paused_reason = NULL, auto_paused_at = NULL, auto_paused_cause = NULL,
    failing_since = NULL,
    circuit_state = 'closed', circuit_open_until = NULL, consecutive_failures = 0,
    circuit_changed_at = CASE WHEN circuit_state <> 'closed' THEN now()
                              ELSE circuit_changed_at END
WHERE id = %(id)s
RETURNING id, pg_notify('herald_jobs', '') IS NULL AS notified;

-- name: quota_targets
-- Targets whose claims need a quota: rate-limited ones, and those whose circuit lets
-- probes through (half-open, or open with its open period over).
SELECT id FROM herald.targets
WHERE NOT paused AND auto_paused_reason IS NULL AND deleted_at IS NULL
  AND (rate_per_second IS NOT NULL
       OR circuit_state = 'half_open'
       OR (circuit_state = 'open' AND circuit_open_until <= now()))
ORDER BY id;

-- name: lock_targets
SELECT id FROM herald.targets WHERE id = ANY (%(ids)s::integer[]) ORDER BY id FOR UPDATE;

-- name: quota_state
-- Read after lock_targets, in a fresh snapshot: the running count is exact.
SELECT t.id, t.circuit_state, coalesce(t.circuit_open_until <= now(), false) AS open_expired,
       t.half_open_probes, t.rate_per_second, t.rate_burst, t.rate_tokens,
       extract(epoch FROM now() - t.rate_updated_at)::double precision AS rate_elapsed,
       (SELECT count(*) FROM herald.jobs r
        WHERE r.target_id = t.id AND r.state = 'running')::integer AS running
FROM herald.targets t
WHERE t.id = ANY (%(ids)s::integer[]) AND NOT t.paused AND t.auto_paused_reason IS NULL
  AND t.deleted_at IS NULL;

-- name: spend_quota
-- After a quota claim: probes taken move an open circuit to half-open; tokens spent
-- leave the bucket.
UPDATE herald.targets t
SET circuit_state = CASE WHEN q.probing AND t.circuit_state = 'open' THEN 'half_open'
                         ELSE t.circuit_state END,
    circuit_open_until = CASE WHEN q.probing AND t.circuit_state = 'open' THEN NULL
                              ELSE t.circuit_open_until END,
    circuit_changed_at = CASE WHEN q.probing AND t.circuit_state = 'open' THEN now()
                              ELSE t.circuit_changed_at END,
    rate_tokens = coalesce(q.tokens, t.rate_tokens),
    rate_updated_at = CASE WHEN q.tokens IS NULL THEN t.rate_updated_at ELSE now() END
FROM unnest(%(ids)s::integer[], %(probing)s::boolean[], %(tokens)s::double precision[])
     AS q (id, probing, tokens)
WHERE t.id = q.id;

-- name: disable_failing_targets
-- Disables the targets whose deliveries have all failed since at least their disable
-- period before %(now)s (spec.disableAfterSeconds, else %(default_seconds)s; 0 never):
-- their jobs are held like a 410's, with cause 'failing'. A target already held (paused,
-- 410) is left alone. Returns the targets disabled now.
UPDATE herald.targets t
SET auto_paused_cause = 'failing', auto_paused_at = %(now)s,
    auto_paused_reason = 'deliveries have failed continuously since '
        || to_char(t.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        || ' (disabled after ' || d.seconds || ' s; last error: '
        || coalesce(left(t.last_error, 200), 'unknown') || ')'
FROM (SELECT id, coalesce((config->>'disableAfterSeconds')::double precision,
                          %(default_seconds)s::double precision) AS seconds
      FROM herald.targets WHERE failing_since IS NOT NULL) d
WHERE t.id = d.id AND d.seconds > 0 AND t.deleted_at IS NULL
  AND t.auto_paused_reason IS NULL AND NOT t.paused
  AND t.failing_since <= %(now)s::timestamptz - make_interval(secs => d.seconds)
RETURNING t.id, t.namespace, t.name, t.auto_paused_reason;

-- name: enable_target
-- Brings a disabled target back: its jobs are claimed again, the failure streak starts
-- over (so it is not disabled again before a full period of failures), the circuit
-- closes. A target not disabled is left as it is.
UPDATE herald.targets
SET auto_paused_reason = NULL, auto_paused_at = NULL, auto_paused_cause = NULL,
    failing_since = NULL,
    circuit_state = 'closed', circuit_open_until = NULL, consecutive_failures = 0,
    circuit_changed_at = CASE WHEN circuit_state <> 'closed' THEN now()
                              ELSE circuit_changed_at END
WHERE id = %(id)s AND auto_paused_cause = 'failing'
RETURNING id, pg_notify('herald_jobs', '') IS NULL AS notified;
