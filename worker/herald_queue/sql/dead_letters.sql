-- Queries of the dead-letter queue. Rows are written by the jobs_record_dead_letter
-- trigger (schema.sql) whenever a job becomes dead.

-- name: selector
-- A fragment (conditions on dead_letters d), included wherever a DeadLetterFilter applies;
-- every part is optional (NULL matches all).
(%(namespace)s::text IS NULL OR d.target_namespace = %(namespace)s)
AND (%(name)s::text IS NULL OR d.target_name = %(name)s)
AND (%(error_type)s::text IS NULL OR d.error_type = %(error_type)s)
AND (%(priority)s::text IS NULL OR d.priority = %(priority)s)
AND (%(failed_after)s::timestamptz IS NULL OR d.failed_at >= %(failed_after)s)
AND (%(failed_before)s::timestamptz IS NULL OR d.failed_at < %(failed_before)s)
AND (%(ids)s::uuid[] IS NULL OR d.id = ANY (%(ids)s::uuid[]))
AND (%(job_ids)s::uuid[] IS NULL OR d.job_id = ANY (%(job_ids)s::uuid[]))

-- name: replayable
-- A fragment: the entries a replay with this selector takes (the store, the API, the CLI
-- and DeadLetterReplay all replay through it). Unreplayed entries matching the selector,
-- except cancelled jobs unless the selector names them by id (ids or job_ids): a
-- cancellation is the user's intent, which a replay by filter or of everything must not undo.
NOT d.replayed
AND {{selector}}
AND (d.reason <> 'cancelled'
     OR %(ids)s::uuid[] IS NOT NULL OR %(job_ids)s::uuid[] IS NOT NULL)

-- name: list_dead_letters
-- Newest first, keyset-paginated on (failed_at, id). Every filter is optional. The payload
-- as its stored text (herald_core.json_depth.shown_payload decodes it where it is shown).
SELECT d.id, d.job_id, d.fingerprint, d.target_namespace, d.target_name, d.target_type,
       d.payload::text AS payload, d.error_message, d.error_type, d.reason, d.http_status, d.retry_count,
       d.last_retry_at, d.priority, d.idempotency_key, d.ordering_key, d.job_created_at,
       d.failed_at, d.replayed, d.replayed_at, d.replay_result, d.replayed_by, d.run_at
FROM herald.dead_letters d
WHERE {{selector}}
  AND (%(replayed)s::boolean IS NULL OR d.replayed = %(replayed)s)
  AND (%(after_failed_at)s::timestamptz IS NULL
       OR (d.failed_at, d.id) < (%(after_failed_at)s, %(after_id)s::uuid))
ORDER BY d.failed_at DESC, d.id DESC
LIMIT %(limit)s;

-- name: get_dead_letter
SELECT d.id, d.job_id, d.fingerprint, d.target_namespace, d.target_name, d.target_type,
       d.payload::text AS payload, d.error_message, d.error_type, d.reason, d.http_status, d.retry_count,
       d.last_retry_at, d.priority, d.idempotency_key, d.ordering_key, d.job_created_at,
       d.failed_at, d.replayed, d.replayed_at, d.replay_result, d.replayed_by, d.run_at,
       d.target_config
FROM herald.dead_letters d
WHERE d.id = %(id)s;

-- name: replay_dead_letters
-- Puts dead letters back on the queue, in one transaction, oldest first.
-- picked: unreplayed entries matching the selector, locked so a concurrent replay skips
--   them (an entry is replayed once, ever), except those this same replay already found
--   without a target (so a run never loops on them).
-- marked: the entries; their target is looked up by namespace/name so a recreated target
--   receives them. Without one, an entry is marked "target-missing" but stays unreplayed:
--   a later replay (once the target exists again) can still put it back.
-- requeued: the job row again (same id, so webhook-id stays stable), attempts reset. It
--   may still exist as dead, or be gone after retention; an idempotency key now used by
--   another job is dropped rather than failing the replay. Ordering-key jobs start held
--   and the caller normalizes their chains. A job that died before its first attempt keeps
--   a runAt still in the future (d.run_at): replaying a job scheduled for later does not
--   deliver it early.
-- counted: the replay counter of each target that got jobs back.
WITH picked AS (
    SELECT d.id, d.target_namespace, d.target_name
    FROM herald.dead_letters d
    WHERE {{replayable}}
      AND (d.replay_result IS DISTINCT FROM 'target-missing'
           OR d.replayed_by IS DISTINCT FROM %(replayed_by)s)
    ORDER BY d.failed_at, d.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE herald.dead_letters d
    SET replayed = t.id IS NOT NULL,
        replayed_at = now(),
        replay_result = CASE WHEN t.id IS NULL THEN 'target-missing' ELSE 'queued' END,
        replayed_by = %(replayed_by)s,
        updated_at = now()
    FROM picked p
    LEFT JOIN herald.targets t ON t.namespace = p.target_namespace AND t.name = p.target_name
                              AND t.deleted_at IS NULL
    WHERE d.id = p.id
    RETURNING d.id, d.job_id, t.id AS target_id, d.priority, d.payload, d.idempotency_key,
              d.ordering_key, d.job_created_at, d.replay_result,
              greatest(now(), d.run_at) AS run_at, d.traceparent, d.tracestate
), requeued AS (
    INSERT INTO herald.jobs AS j (id, target_id, priority, payload, idempotency_key,
                                  ordering_key, held, run_at, deadline, created_at,
                                  traceparent, tracestate)
    SELECT m.job_id, m.target_id, m.priority, m.payload,
           CASE WHEN EXISTS (SELECT 1 FROM herald.jobs o
                             WHERE o.target_id = m.target_id
                               AND o.idempotency_key = m.idempotency_key
                               AND o.id <> m.job_id)
                THEN NULL ELSE m.idempotency_key END,
           m.ordering_key, m.ordering_key IS NOT NULL, m.run_at,
           m.run_at + make_interval(secs => CASE m.priority
                                             WHEN 'high' THEN 0
                                             WHEN 'medium' THEN %(budget_medium)s
                                             ELSE %(budget_low)s END),
           m.job_created_at, m.traceparent, m.tracestate
    FROM marked m
    WHERE m.target_id IS NOT NULL
    ON CONFLICT (id) DO UPDATE
    SET state = 'queued', target_id = EXCLUDED.target_id, attempts = 0,
        idempotency_key = EXCLUDED.idempotency_key, held = EXCLUDED.held, run_at = EXCLUDED.run_at, deadline = EXCLUDED.deadline,
        dead_reason = NULL, finished_at = NULL, started_at = NULL, last_error = NULL,
        last_error_class = NULL, last_http_status = NULL
    WHERE j.state = 'dead'
    RETURNING j.id, j.target_id, j.ordering_key
), counted AS (
    -- Each target's replay counter (herald_dead_letters_replayed_total), whoever replays.
    UPDATE herald.targets t SET replayed_total = t.replayed_total + r.n
    FROM (SELECT target_id, count(*) AS n FROM requeued GROUP BY target_id) r
    WHERE t.id = r.target_id
)
SELECT m.id, m.job_id, m.replay_result, r.target_id, r.ordering_key,
       r.id IS NOT NULL AS requeued, pg_notify('herald_jobs', '') IS NULL AS notified
FROM marked m LEFT JOIN requeued r ON r.id = m.job_id;

-- name: count_replayable
-- What a replay with this selector would pick (for dry runs).
SELECT count(*) AS matched,
       count(*) FILTER (WHERE NOT EXISTS (
           SELECT 1 FROM herald.targets t
           WHERE t.namespace = d.target_namespace AND t.name = d.target_name
             AND t.deleted_at IS NULL))
           AS target_missing
FROM (SELECT * FROM herald.dead_letters d
      WHERE {{replayable}}
      ORDER BY d.failed_at, d.id
      LIMIT %(limit)s) AS d;

-- name: count_cancelled_left_out
-- Cancelled jobs a replay with this selector leaves out (see replayable), to say so.
SELECT count(*) AS cancelled FROM herald.dead_letters d
WHERE NOT d.replayed AND d.reason = 'cancelled'
  AND %(ids)s::uuid[] IS NULL AND %(job_ids)s::uuid[] IS NULL
  AND {{selector}};

-- name: count_replayed_by
SELECT count(*) FILTER (WHERE replay_result = 'queued') AS replayed,
       count(*) FILTER (WHERE replay_result = 'target-missing') AS skipped
FROM herald.dead_letters WHERE replayed_by = %(replayed_by)s;

-- name: count_purgeable
SELECT count(*) AS matched FROM herald.dead_letters
WHERE failed_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(older_than)s)
  AND (%(namespace)s::text IS NULL OR target_namespace = %(namespace)s)
  AND (%(name)s::text IS NULL OR target_name = %(name)s);

-- name: purge_dead_letters
-- Retention and `dlq purge`: removes entries that failed before the cutoff, a bounded
-- batch at a time (the caller loops until a batch comes back short). now: the caller's
-- clock (NULL: the database's).
DELETE FROM herald.dead_letters
WHERE id = ANY (ARRAY(
    SELECT id FROM herald.dead_letters
    WHERE failed_at < coalesce(%(now)s::timestamptz, now())
                      - make_interval(secs => %(older_than)s)
      AND (%(namespace)s::text IS NULL OR target_namespace = %(namespace)s)
      AND (%(name)s::text IS NULL OR target_name = %(name)s)
    LIMIT %(limit)s));

-- name: dead_letter_stats
SELECT d.target_namespace, d.target_name, d.error_type, d.priority, d.replayed,
       count(*) AS n, min(d.failed_at) AS oldest, max(d.failed_at) AS newest
FROM herald.dead_letters d
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5;

-- name: waiting_by_target
-- Dead letters a replay would put back, per target and error class (the kubectl view of
-- the DLQ in each PublishingTarget's status). Cancelled jobs are the user's own doing,
-- not a failure waiting for a replay.
SELECT d.target_namespace, d.target_name, d.error_type, count(*) AS n
FROM herald.dead_letters d
WHERE NOT d.replayed
  AND d.reason <> 'cancelled'
  AND (%(namespace)s::text IS NULL OR d.target_namespace = %(namespace)s)
GROUP BY 1, 2, 3;

-- name: dead_letter_counters
-- The dead-letter and replay counters of every target row (tombstones too: a deleted
-- target's jobs are its last dead letters), summed over the rows of one namespace/name.
SELECT t.namespace, t.name, c.error_type, c.reason, sum(c.n)::bigint AS n
FROM herald.dead_letter_counts c JOIN herald.targets t ON t.id = c.target_id
GROUP BY 1, 2, 3, 4;

-- name: replay_counters
SELECT t.namespace, t.name, sum(t.replayed_total)::bigint AS n
FROM herald.targets t
GROUP BY 1, 2;
