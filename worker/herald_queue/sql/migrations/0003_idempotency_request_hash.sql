-- 0003: jobs remember a digest of the submission that carried an idempotency key, so that
-- the key reused with other parameters is refused (409) instead of silently answering the
-- first job. Jobs enqueued before keep NULL: any request with their key is a duplicate.

ALTER TABLE herald.jobs ADD COLUMN request_hash text;
