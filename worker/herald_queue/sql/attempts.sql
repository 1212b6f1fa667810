-- The attempt record (herald.attempts, migration 0007): reading a job's attempts and
-- keeping the day partitions. Rows are written by the settle statements of jobs.sql.

-- name: list_attempts
-- A job's attempts, oldest first; seq orders them and is the page cursor.
SELECT a.seq, a.job_id, a.attempt, a.recorded_at,
       CASE WHEN t.id IS NULL THEN NULL ELSE t.namespace || '/' || t.name END AS target,
       a.worker, a.started_at, a.duration_seconds, a.http_status, a.error_class, a.message,
       a.response, a.retry_after_seconds, a.decision, a.retry_at
FROM herald.attempts a LEFT JOIN herald.targets t ON t.id = a.target_id
WHERE a.job_id = %(job_id)s AND a.seq > %(after)s
ORDER BY a.seq
LIMIT %(limit)s;

-- name: job_known
-- Whether a job exists, as a job row or as a dead letter (its row may be pruned).
SELECT EXISTS (SELECT 1 FROM herald.jobs WHERE id = %(job_id)s)
    OR EXISTS (SELECT 1 FROM herald.dead_letters WHERE job_id = %(job_id)s) AS known;

-- name: create_partitions
-- The day partitions (UTC) from the day of now for days days, made if missing.
SELECT herald.create_attempt_partitions(
    (coalesce(%(now)s::timestamptz, now()) AT TIME ZONE 'UTC')::date, %(days)s) AS made;

-- name: day_partitions
-- The day partitions, oldest first, with the day each holds.
SELECT c.relname AS name, to_date(substr(c.relname, 11), 'YYYYMMDD') AS day
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'herald.attempts'::regclass AND c.relname ~ '^attempts_p[0-9]{8}$'
ORDER BY 2;

-- name: day_needed_by_dead_letters
-- Whether a dead letter still kept may have attempts on this day (between the creation
-- of its job and its death): its attempts stay viewable while it is kept.
SELECT EXISTS (
    SELECT 1 FROM herald.dead_letters d
    WHERE d.failed_at >= %(day)s::timestamp AT TIME ZONE 'UTC'
      AND d.job_created_at < (%(day)s::date + 1)::timestamp AT TIME ZONE 'UTC') AS needed;

-- name: prune_default
-- Rows of the default partition (days that had no partition when they were written)
-- past retention, a bounded batch at a time; normally it is empty.
DELETE FROM herald.attempts_default
WHERE seq = ANY (ARRAY(
    SELECT a.seq FROM herald.attempts_default a
    WHERE a.recorded_at < coalesce(%(now)s::timestamptz, now())
                          - make_interval(secs => %(older_than)s)
      AND NOT EXISTS (SELECT 1 FROM herald.dead_letters d WHERE d.job_id = a.job_id)
    LIMIT %(limit)s));
