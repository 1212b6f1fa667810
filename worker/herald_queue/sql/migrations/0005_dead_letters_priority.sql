-- 0005: dead letters can be listed and replayed by priority (the API's and the CLI's
-- priority filter, DeadLetterReplay's spec.priority); the index seed 004 lists for it.

CREATE INDEX dead_letters_priority_idx ON herald.dead_letters (priority, failed_at DESC);
