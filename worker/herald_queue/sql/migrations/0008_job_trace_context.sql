-- 0008: the producer's W3C trace context kept with each job (traceparent and tracestate
-- of the submitting request, validated by herald_core.trace_context), so the worker's
-- attempt spans continue the producer's trace and the receiver gets it on; its dead
-- letter keeps it, and a replay gives it back. Nullable columns without a default: adding
-- them rewrites nothing. Their length checks are added NOT VALID, so no row is read under
-- the tables' exclusive lock (a CHECK added with its column is verified by reading the
-- whole table while running workers wait); 0009 validates them in its own transaction,
-- under a lock that lets workers claim, settle and submit meanwhile.

ALTER TABLE herald.jobs
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text,
    ADD CONSTRAINT jobs_traceparent_check CHECK (length(traceparent) = 55) NOT VALID,
    ADD CONSTRAINT jobs_tracestate_check CHECK (length(tracestate) <= 512) NOT VALID;

ALTER TABLE herald.dead_letters
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text,
    ADD CONSTRAINT dead_letters_traceparent_check CHECK (length(traceparent) = 55) NOT VALID,
    ADD CONSTRAINT dead_letters_tracestate_check CHECK (length(tracestate) <= 512) NOT VALID;

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
