-- 0009: validate the length checks 0008 added NOT VALID. VALIDATE CONSTRAINT reads the
-- table under SHARE UPDATE EXCLUSIVE, which running workers' claims, settles and submissions
-- do not wait for; each migration has its own transaction, so 0008's exclusive locks are
-- gone by now. A database made from schema.sql has them valid from the start.

ALTER TABLE herald.jobs VALIDATE CONSTRAINT jobs_traceparent_check;
ALTER TABLE herald.jobs VALIDATE CONSTRAINT jobs_tracestate_check;
ALTER TABLE herald.dead_letters VALIDATE CONSTRAINT dead_letters_traceparent_check;
ALTER TABLE herald.dead_letters VALIDATE CONSTRAINT dead_letters_tracestate_check;
