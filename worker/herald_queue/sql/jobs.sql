-- Queries of the job queue. Each block starts with "-- name: NAME" and is loaded once by
-- name (herald_queue.sql). Parameters are always bound, never formatted in.

-- name: enqueue_many
-- The general enqueue path (idempotency keys, ordering keys, run_at): the batch arrives
-- as one JSON document. A duplicate idempotency key inserts nothing; the caller then reads
-- the existing job. Jobs with an ordering key start held; normalize_chains picks the head.
-- With notify, the commit wakes idle workers (see herald_queue.waker for when).
INSERT INTO herald.jobs (id, target_id, priority, payload, idempotency_key, ordering_key,
                         held, run_at, deadline, request_hash, traceparent, tracestate)
SELECT b.id, b.target_id, b.priority,
       coalesce(b.payload, 'null'::json),  -- a JSON null payload comes out of the record as NULL
       b.idempotency_key, b.ordering_key,
       b.ordering_key IS NOT NULL,
       greatest(b.run_at, now()),
       greatest(b.run_at, now()) + make_interval(secs => b.budget),
       b.request_hash, b.traceparent, b.tracestate
FROM json_to_recordset(%(batch)s::json) AS b(
    id uuid, target_id integer, priority text, payload json, idempotency_key text,
    ordering_key text, run_at timestamptz, budget double precision, request_hash text,
    traceparent text, tracestate text)
ON CONFLICT (target_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, CASE WHEN %(notify)s THEN pg_notify('herald_jobs', '') END AS notified;

-- name: listen_jobs
LISTEN herald_jobs;

-- name: unlisten_jobs
UNLISTEN herald_jobs;

-- name: notify_jobs
-- Wakes idle workers (LISTEN herald_jobs) when the transaction commits.
SELECT pg_notify('herald_jobs', '');

-- name: notify_more
-- From the waker (herald_queue/listener.py) when its claim came back full: wakes the
-- other workers, which do not hear herald_jobs, to share the backlog.
SELECT pg_notify('herald_jobs_more', '');

-- name: transaction_time
-- The COPY path takes run_at (and deadlines) from the transaction's time, like now().
SELECT now();

-- name: copy_jobs
-- The fast path for batches without idempotency keys, ordering keys or run_at.
COPY herald.jobs (id, target_id, priority, payload, run_at, deadline) FROM STDIN;

-- name: find_by_idempotency_keys
-- The jobs holding these keys, with the digest of the request that created each.
SELECT j.id, j.target_id, j.idempotency_key, j.state, j.request_hash
FROM herald.jobs j
JOIN unnest(%(target_ids)s::integer[], %(keys)s::text[]) AS k (target_id, idempotency_key)
  ON j.target_id = k.target_id AND j.idempotency_key = k.idempotency_key;

-- name: lock_chains
-- Serialises every change to the same ordering-key chains (enqueue, finish, replay), so
-- that normalize_chains, run next in the same transaction, sees all of them. Keys are
-- locked in sorted order to rule out deadlocks.
SELECT pg_advisory_xact_lock(h)
FROM (SELECT DISTINCT hashtextextended(k.target_id::text || '/' || k.ordering_key, %(seed)s) AS h
      FROM unnest(%(target_ids)s::integer[], %(keys)s::text[]) AS k (target_id, ordering_key)
      ORDER BY 1) AS locks;

-- name: lock_idempotency_keys
-- A batch takes the advisory locks of its idempotency keys in sorted order before
-- inserting, so two batches sharing keys in different orders wait for each other instead
-- of deadlocking on the unique index.
SELECT pg_advisory_xact_lock(h)
FROM (SELECT DISTINCT hashtextextended(k.target_id::text || ':' || k.key, %(seed)s) AS h
      FROM unnest(%(target_ids)s::integer[], %(keys)s::text[]) AS k (target_id, key)
      ORDER BY 1) AS locks;

-- name: chains_of_jobs
-- The ordering-key chains of these jobs, so that a change to them can take the chains'
-- locks before it locks any job row (lock order: herald_queue/locks.py).
SELECT DISTINCT target_id, ordering_key
FROM herald.jobs
WHERE id = ANY(%(ids)s) AND ordering_key IS NOT NULL;

-- name: normalize_chains
-- In each chain (unfinished jobs of one target sharing an ordering key) one job may run:
-- the running one if there is one (a job is never overtaken while it is being delivered,
-- whatever its place), else the oldest. Every other waiting job is held.
UPDATE herald.jobs j
SET held = (j.seq <> h.head_seq)
FROM (SELECT c.target_id, c.ordering_key,
             coalesce(min(c.seq) FILTER (WHERE c.state = 'running'), min(c.seq)) AS head_seq
      FROM herald.jobs c
      JOIN (SELECT DISTINCT * FROM unnest(%(target_ids)s::integer[], %(keys)s::text[]))
           AS k (target_id, ordering_key)
        ON c.target_id = k.target_id AND c.ordering_key = k.ordering_key
      WHERE c.state IN ('queued', 'retrying', 'running')
      GROUP BY c.target_id, c.ordering_key) AS h
WHERE j.target_id = h.target_id
  AND j.ordering_key = h.ordering_key
  AND j.state IN ('queued', 'retrying')
  AND j.held IS DISTINCT FROM (j.seq <> h.head_seq);

-- name: claim
-- Claims up to %(limit)s ready jobs, earliest deadline first, under a lease.
-- eligible: without quotas, every target that is closed, not paused and not rate limited,
--   each up to target_limit or its own given limit; with quotas (half-open probes, rate-limit
--   tokens), exactly the targets given, each with its own limit.
-- candidates: per eligible target, its first ready jobs from jobs_claim_idx (a read, no
--   locks), merged by deadline; twice the limit so concurrent claimers find spares.
-- The inner SELECT locks what it takes with SKIP LOCKED and re-checks the state: a job
--   another worker took since our snapshot is skipped, never claimed twice.
UPDATE herald.jobs j
SET state = 'running',
    attempts = j.attempts + 1,
    leased_by = %(worker)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    started_at = now()
WHERE j.id = ANY (ARRAY(
    SELECT c.id
    FROM herald.jobs c
    WHERE c.id = ANY (ARRAY(
        SELECT r.id
        FROM (SELECT tg.id, coalesce(q.lim, %(target_limit)s) AS lim
              FROM herald.targets tg
              LEFT JOIN unnest(%(quota_targets)s::integer[], %(quota_limits)s::integer[])
                   AS q (id, lim) ON q.id = tg.id
              WHERE NOT tg.paused
                AND tg.auto_paused_reason IS NULL
                AND tg.deleted_at IS NULL
                AND CASE WHEN %(with_quotas)s THEN q.id IS NOT NULL
                         ELSE tg.circuit_state = 'closed' AND tg.rate_per_second IS NULL
                    END) AS eligible
        CROSS JOIN LATERAL (
            SELECT r.id, r.deadline, r.seq
            FROM herald.jobs r
            WHERE r.target_id = eligible.id
              AND r.state IN ('queued', 'retrying')
              AND NOT r.held
              AND r.run_at <= now()
            ORDER BY r.deadline, r.seq
            LIMIT eligible.lim) AS r
        ORDER BY r.deadline, r.seq
        LIMIT %(limit)s * 2))
      AND c.state IN ('queued', 'retrying')
      AND NOT c.held
      AND c.run_at <= now()
    ORDER BY c.deadline, c.seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED))
  -- Unless HERALD_DURABLE_CLAIMS, this transaction commits without waiting for the disk
  -- (synchronous_commit off for it alone): a claim lost to a crash of PostgreSQL leaves
  -- its job queued, to be delivered again (at least once), never lost.
  AND (SELECT CASE WHEN %(async_commit)s THEN set_config('synchronous_commit', 'off', true)
                   ELSE 'unchanged' END) IS NOT NULL
RETURNING j.id, j.target_id, j.priority, j.payload, j.attempts, j.idempotency_key,
          j.ordering_key, j.created_at, j.run_at, j.lease_expires_at, j.traceparent,
          j.tracestate;

-- name: attempt_notes
-- A fragment: the attempt record's notes of a batch (herald_queue.jobs._notes_json), one
-- JSON document (cheaper to send than an array per column); started in epoch seconds.
json_to_recordset(%(notes)s::json) AS n (
    id uuid, attempt integer, target_id integer, started double precision,
    duration double precision, http_status integer, response text, message text)

-- name: record_successes
-- A fragment (CTEs), included by complete and complete_and_claim: marks delivered jobs
-- succeeded (only the attempts this worker still holds: an outcome that comes late never
-- settles a newer attempt of the same job) and records the success on their targets: the
-- failure streak ends and a half-open circuit closes.
done AS (
    UPDATE herald.jobs j
    SET state = 'succeeded', finished_at = now(), leased_by = NULL, lease_expires_at = NULL
    FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS d (id, attempt)
    WHERE j.id = d.id AND j.attempts = d.attempt
      AND j.state = 'running' AND j.leased_by = %(worker)s
    RETURNING j.id, j.target_id
), per_target AS (
    SELECT target_id, count(*) AS n FROM done GROUP BY target_id
), recorded AS (
    UPDATE herald.targets t
    SET delivered_total = t.delivered_total + p.n,
        last_delivery_at = now(),
        failing_since = NULL,
        consecutive_failures = CASE WHEN t.circuit_state = 'open' THEN t.consecutive_failures
                                    ELSE 0 END,
        circuit_state = CASE WHEN t.circuit_state = 'half_open' THEN 'closed'
                             ELSE t.circuit_state END,
        circuit_changed_at = CASE WHEN t.circuit_state = 'half_open' THEN now()
                                  ELSE t.circuit_changed_at END,
        circuit_recoveries_total = t.circuit_recoveries_total
                                   + (t.circuit_state = 'half_open')::integer
    FROM per_target p
    WHERE t.id = p.target_id
    RETURNING t.id
), noted_successes AS (
    -- Every attempt on record (herald.attempts), in the same statement: a delivery whose
    -- lease this worker lost first is recorded as lease-lost.
    INSERT INTO herald.attempts (job_id, attempt, target_id, worker, started_at,
                                 duration_seconds, http_status, response, decision)
    SELECT n.id, n.attempt, n.target_id, %(worker)s, to_timestamp(n.started), n.duration,
           n.http_status, n.response,
           CASE WHEN d.id IS NULL THEN 'lease-lost' ELSE 'succeeded' END
    FROM {{attempt_notes}}
    LEFT JOIN done d ON d.id = n.id
)

-- name: complete
-- Completes delivered jobs; reports which (a job whose lease this worker lost is not
-- among them) and which targets' half-open circuits these successes closed.
WITH {{record_successes}}, recovered AS (
    SELECT t.id, t.namespace, t.name FROM herald.targets t
    WHERE t.id IN (SELECT target_id FROM per_target) AND t.circuit_state = 'half_open'
)
SELECT (SELECT coalesce(array_agg(id), '{}') FROM done) AS completed,
       (SELECT coalesce(array_agg(namespace || '/' || name), '{}') FROM recovered)
           AS recovered,
       (SELECT count(*) FROM recorded) AS targets;

-- name: complete_and_claim
-- A sequential consumer's step: complete what it delivered and claim more, in one
-- statement (one round trip, one commit). The claim reads the snapshot from before the
-- completions, which changes nothing: completed jobs were running, never claimable.
WITH {{record_successes}}
{{claim}};

-- name: fail
-- Records failed attempts. Per target, transient and unknown failures extend the failure
-- streak and may open the circuit (a failed half-open probe reopens it). Per job, what the
-- caller decided (retry after delay seconds, or dead when the attempts are spent) unless
-- the target's circuit is now open: then the attempt is given back and the job waits, so
-- an outage never burns attempts. Permanent failures are dead at once.
-- owned: the jobs the caller (or, for rescue, the expired lease) still holds, with their
--   real target; per_target: what the failures say about each target's health.
WITH f AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(leased_by)s::text[],
                         %(classes)s::text[], %(messages)s::text[], %(statuses)s::integer[],
                         %(delays)s::double precision[], %(exhausted)s::boolean[],
                         %(counts)s::boolean[], %(rescue)s::boolean[],
                         %(retry_afters)s::double precision[])
        AS f (id, attempt, leased_by, error_class, message, http_status, delay, exhausted,
              counts, rescue, retry_after)
), owned AS (
    SELECT f.*, j.target_id, j.attempts, j.priority
    FROM f JOIN herald.jobs j ON j.id = f.id
    WHERE j.state = 'running' AND j.leased_by = f.leased_by AND j.attempts = f.attempt
      AND (NOT f.rescue OR j.lease_expires_at < now())
), per_target AS (
    SELECT h.target_id,
           count(*) FILTER (WHERE h.counts AND h.error_class <> 'permanent') AS unwell,
           count(*) AS failures,
           (array_agg(h.message ORDER BY h.id))[1] AS message,
           (array_agg(h.error_class ORDER BY h.id))[1] AS error_class
    FROM owned h
    GROUP BY h.target_id
), decided AS (
    SELECT p.*, t.circuit_state AS before,
           p.unwell > 0 AND (t.circuit_state = 'half_open'
               OR (t.circuit_state = 'closed'
                   AND t.consecutive_failures + p.unwell >= t.failure_threshold)) AS trips
    FROM per_target p JOIN herald.targets t ON t.id = p.target_id
), breaker AS (
    UPDATE herald.targets t
    SET consecutive_failures = t.consecutive_failures + d.unwell,
        circuit_state = CASE WHEN d.trips THEN 'open' ELSE t.circuit_state END,
        circuit_open_until = CASE WHEN d.trips THEN now() + make_interval(secs => t.open_seconds)
                                  ELSE t.circuit_open_until END,
        circuit_changed_at = CASE WHEN d.trips THEN now() ELSE t.circuit_changed_at END,
        circuit_trips_total = t.circuit_trips_total + d.trips::integer,
        failed_attempts_total = t.failed_attempts_total + d.failures,
        failing_since = CASE WHEN d.unwell > 0 THEN coalesce(t.failing_since, now())
                             ELSE t.failing_since END,
        last_error = d.message,
        last_error_class = d.error_class,
        last_error_at = now()
    FROM decided d
    WHERE t.id = d.target_id
    RETURNING t.id, t.circuit_state, t.circuit_open_until, t.namespace, t.name, d.trips,
              d.before
), outcome AS (
    SELECT h.*, b.circuit_open_until, now() + make_interval(secs => h.delay) AS retry_at,
           b.circuit_state = 'open' AND h.error_class <> 'permanent' AS refund
    FROM owned h JOIN breaker b ON b.id = h.target_id
), updated AS (
    UPDATE herald.jobs j
    SET state = CASE
            WHEN o.error_class = 'permanent' THEN 'dead'
            WHEN o.refund THEN CASE WHEN o.attempts > 1 THEN 'retrying' ELSE 'queued' END
            WHEN o.exhausted THEN 'dead'
            ELSE 'retrying' END,
        attempts = o.attempts - o.refund::integer,
        dead_reason = CASE
            WHEN o.error_class = 'permanent' THEN 'permanent-error'
            WHEN o.refund THEN NULL
            WHEN o.exhausted THEN 'attempts-exhausted' END,
        run_at = greatest(o.retry_at, CASE WHEN o.refund THEN o.circuit_open_until END),
        deadline = greatest(o.retry_at, CASE WHEN o.refund THEN o.circuit_open_until END)
                   + make_interval(secs => CASE o.priority
                                              WHEN 'high' THEN 0
                                              WHEN 'medium' THEN %(budget_medium)s
                                              ELSE %(budget_low)s END),
        finished_at = CASE
            WHEN o.error_class = 'permanent' OR (o.exhausted AND NOT o.refund) THEN now() END,
        held = false,
        leased_by = NULL,
        lease_expires_at = NULL,
        last_error = o.message,
        last_error_class = o.error_class,
        last_http_status = o.http_status
    FROM outcome o
    WHERE j.id = o.id AND j.state = 'running' AND j.leased_by = o.leased_by
    RETURNING j.id, j.state, j.attempts, j.run_at, j.ordering_key, j.target_id, o.refund
), noted AS (
    -- Every attempt on record (herald.attempts) with what was decided, in this statement.
    -- A failure whose lease was lost first is recorded as lease-lost (not by the rescuer,
    -- which only speaks for leases still expired).
    INSERT INTO herald.attempts (job_id, attempt, target_id, worker, started_at,
                                 duration_seconds, http_status, error_class, message,
                                 response, retry_after_seconds, decision, retry_at)
    SELECT f.id, f.attempt, coalesce(u.target_id, n.target_id), f.leased_by,
           to_timestamp(n.started), n.duration, f.http_status, f.error_class, f.message,
           n.response, f.retry_after,
           CASE WHEN u.id IS NULL THEN 'lease-lost'
                WHEN u.state = 'dead' THEN 'dead'
                WHEN u.refund THEN 'circuit-open'
                ELSE 'retry' END,
           CASE WHEN u.id IS NOT NULL AND u.state <> 'dead' THEN u.run_at END
    FROM f LEFT JOIN updated u ON u.id = f.id
    LEFT JOIN {{attempt_notes}} ON n.id = f.id
    WHERE u.id IS NOT NULL OR NOT f.rescue
)
SELECT u.id, u.state, u.attempts, u.run_at, u.ordering_key, u.target_id, u.refund,
       b.namespace || '/' || b.name AS target, b.trips, b.before AS circuit_before,
       b.circuit_state AS circuit_after
FROM updated u JOIN breaker b ON b.id = u.target_id;

-- name: heartbeat
-- Extends the leases this worker still holds; returns the jobs it no longer holds.
WITH extended AS (
    UPDATE herald.jobs
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    WHERE id = ANY (%(ids)s::uuid[]) AND state = 'running' AND leased_by = %(worker)s
    RETURNING id
)
SELECT array(SELECT unnest(%(ids)s::uuid[]) EXCEPT SELECT id FROM extended) AS lost;

-- name: release
-- Gives back jobs a stopping worker has not started: the attempt is not counted and the
-- job keeps its place (run_at and deadline unchanged), so another worker takes it at once.
WITH released AS (
    UPDATE herald.jobs
    SET state = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'queued' END,
        attempts = attempts - 1,
        leased_by = NULL,
        lease_expires_at = NULL
    WHERE id = ANY (%(ids)s::uuid[]) AND state = 'running' AND leased_by = %(worker)s
    RETURNING id
), noted AS (
    -- Attempts given back with a reason (withheld by the worker, target-paused after a
    -- 410) are on record too (herald.attempts); a plain release (shutdown) records none.
    INSERT INTO herald.attempts (job_id, attempt, target_id, worker, started_at,
                                 duration_seconds, http_status, message, response, decision)
    SELECT n.id, n.attempt, n.target_id, %(worker)s, to_timestamp(n.started), n.duration,
           n.http_status, n.message, n.response, %(decision)s
    FROM {{attempt_notes}}
    WHERE n.id IN (SELECT id FROM released)
)
SELECT count(*) AS released, pg_notify('herald_jobs', '') IS NULL AS notified FROM released;

-- name: expired_leases
-- Jobs whose worker stopped renewing its lease (it died, or lost the database).
SELECT j.id, j.leased_by, j.target_id, j.attempts, j.priority, j.ordering_key
FROM herald.jobs j
WHERE j.state = 'running' AND j.lease_expires_at < now()
ORDER BY j.lease_expires_at
LIMIT %(limit)s;

-- name: cancel
-- Cancels waiting jobs: they become dead (reason "cancelled") and can be replayed.
UPDATE herald.jobs
SET state = 'dead', dead_reason = 'cancelled', finished_at = now(), held = false,
    last_error = %(message)s, last_error_class = 'permanent'
WHERE id = ANY (%(ids)s::uuid[]) AND state IN ('queued', 'retrying')
RETURNING id, target_id, ordering_key;

-- name: bury_deleted_targets_jobs
-- The waiting jobs of deleted targets go to the dead-letter queue (reason target-deleted),
-- so nothing is dropped and they can be replayed to a recreated target. Run when a target
-- is deleted and by the sweeper, which catches jobs enqueued while the deletion ran and
-- retries of deliveries that were in flight.
UPDATE herald.jobs j
SET state = 'dead', dead_reason = 'target-deleted', finished_at = now(), held = false,
    last_error = 'target ' || t.namespace || '/' || t.name
                 || ' was deleted while this job waited',
    last_error_class = 'permanent'
FROM herald.targets t
WHERE t.deleted_at IS NOT NULL AND j.target_id = t.id AND j.state IN ('queued', 'retrying')
  AND (%(target_id)s::integer IS NULL OR t.id = %(target_id)s)
RETURNING j.id;

-- name: count_running_for_target
SELECT count(*) AS running FROM herald.jobs WHERE target_id = %(target_id)s
  AND state = 'running';

-- name: job_record
-- A fragment: a job as JobRecord reads it (a purged target's name shows as "(deleted)").
-- The payload as its stored text: decoded, if it can be, only where it is shown.
SELECT j.id, coalesce(t.namespace, '(deleted)') AS namespace,
       coalesce(t.name, '(deleted)') AS target_name, j.priority, j.state,
       j.payload::text AS payload,
       j.idempotency_key, j.ordering_key, j.held, j.attempts, j.run_at, j.created_at,
       j.started_at, j.finished_at, j.last_error, j.last_error_class, j.last_http_status,
       j.dead_reason
FROM herald.jobs j LEFT JOIN herald.targets t ON t.id = j.target_id

-- name: get_job
{{job_record}}
WHERE j.id = %(id)s;

-- name: list_jobs
-- Most recent first; id is a UUIDv7, so the primary key orders by enqueue time.
{{job_record}}
WHERE (%(state)s::text IS NULL OR j.state = %(state)s)
  AND (%(target_id)s::integer IS NULL OR j.target_id = %(target_id)s)
  AND (%(priority)s::text IS NULL OR j.priority = %(priority)s)
  AND (%(before)s::uuid IS NULL OR j.id < %(before)s)
ORDER BY j.id DESC
LIMIT %(limit)s;

-- name: prune_finished
-- Retention: removes finished jobs older than the cutoff, a bounded batch at a time.
-- now: the cleaner's clock (NULL: the database's; tests pass one).
DELETE FROM herald.jobs
WHERE id = ANY (ARRAY(
    SELECT id FROM herald.jobs
    WHERE state IN ('succeeded', 'dead')
      AND finished_at < coalesce(%(now)s::timestamptz, now())
                        - make_interval(secs => %(older_than)s)
    LIMIT %(limit)s));
