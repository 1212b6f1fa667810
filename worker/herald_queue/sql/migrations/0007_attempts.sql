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
