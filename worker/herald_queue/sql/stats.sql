-- Queries of queue statistics.

-- name: job_counts
-- Jobs per target, priority and state, with the age of the oldest ready job. Reads every
-- row kept (live jobs, and finished ones within the job retention period).
SELECT t.namespace, t.name, j.priority, j.state, count(*)::bigint AS n,
       extract(epoch FROM now() - min(j.run_at) FILTER (
           WHERE j.state IN ('queued', 'retrying') AND NOT j.held AND j.run_at <= now()
       ))::double precision AS oldest_ready_age_seconds,
       count(*) FILTER (
           WHERE j.state IN ('queued', 'retrying') AND NOT j.held AND j.run_at <= now()
       )::bigint AS ready
FROM herald.jobs j JOIN herald.targets t ON t.id = j.target_id
WHERE %(live_only)s::boolean IS FALSE OR j.state IN ('queued', 'retrying', 'running')
GROUP BY t.namespace, t.name, j.priority, j.state
ORDER BY t.namespace, t.name, j.priority, j.state;

-- name: ready_for_scaling
-- What the workers could start now: ready jobs of targets that are not paused and whose
-- circuit is not open (the operator scales on this, so a dead target adds no workers).
SELECT count(*)::bigint AS ready
FROM herald.jobs j JOIN herald.targets t ON t.id = j.target_id
WHERE j.state IN ('queued', 'retrying') AND NOT j.held AND j.run_at <= now()
  AND NOT t.paused AND t.auto_paused_reason IS NULL AND t.deleted_at IS NULL
  AND t.circuit_state <> 'open';
