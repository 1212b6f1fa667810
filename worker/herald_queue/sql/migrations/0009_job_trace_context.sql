-- 0009: the producer's W3C trace context kept with each job (traceparent and tracestate
-- of the submitting request, validated by herald_core.trace_context), so the worker's
-- attempt spans continue the producer's trace and the receiver gets it on. Nullable
-- columns without a default: adding them rewrites nothing and takes the table's lock only
-- for a moment.

ALTER TABLE herald.jobs
    ADD COLUMN traceparent text CHECK (length(traceparent) = 55),
    ADD COLUMN tracestate text CHECK (length(tracestate) <= 512);
