-- Queries of queue statistics.

-- "Ready" has one definition, written out in both queries below (keep them in step;
-- tests/integration/test_ready.py checks they agree): a job the workers could start now.
-- It is waiting (queued or retrying), due (run_at passed), not held behind an earlier job
-- of its ordering key, and its target takes deliveries: not paused (by its spec, or
-- automatically after a 410), not deleted, circuit not open. The jobs of a paused target
-- or an open circuit wait, counted as queued/retrying, but are not ready.

-- name: job_counts
-- Jobs per target, priority and state, with the number of ready jobs and the age of the
-- oldest one. Reads every row kept (live jobs, and finished ones within the job retention
-- period) unless live_only.
SELECT t.namespace, t.name, j.priority, j.state, count(*)::bigint AS n,
       extract(epoch FROM now() - min(j.run_at) FILTER (WHERE r.ready))::double precision
           AS oldest_ready_age_seconds,
       count(*) FILTER (WHERE r.ready)::bigint AS ready
FROM herald.jobs j
JOIN herald.targets t ON t.id = j.target_id
CROSS JOIN LATERAL (
    SELECT j.state IN ('queued', 'retrying') AND NOT j.held AND j.run_at <= now()
           AND NOT t.paused AND t.auto_paused_reason IS NULL AND t.deleted_at IS NULL
           AND t.circuit_state <> 'open' AS ready) AS r
WHERE %(live_only)s::boolean IS FALSE OR j.state IN ('queued', 'retrying', 'running')
GROUP BY t.namespace, t.name, j.priority, j.state
ORDER BY t.namespace, t.name, j.priority, j.state;

-- name: ready_for_scaling
-- The number of ready jobs (the operator scales on this, so a dead target adds no workers).
SELECT count(*)::bigint AS ready
FROM herald.jobs j JOIN herald.targets t ON t.id = j.target_id
WHERE j.state IN ('queued', 'retrying') AND NOT j.held AND j.run_at <= now()
  AND NOT t.paused AND t.auto_paused_reason IS NULL AND t.deleted_at IS NULL
  AND t.circuit_state <> 'open';

-- name: target_capacities
-- The spec.capacity of each live target that has one (herald_queue.capacity).
SELECT t.namespace, t.name, (t.config -> 'capacity' ->> 'jobs')::bigint AS jobs
FROM herald.targets t
WHERE t.deleted_at IS NULL AND t.config ? 'capacity';
