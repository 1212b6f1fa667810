-- Advisory locks and the sessions that hold them (herald_queue/locks.py defines the keys).

-- name: try_session_lock
-- A session advisory lock, without waiting: true when taken.
SELECT pg_try_advisory_lock(%(key)s);

-- name: release_session_lock
SELECT pg_advisory_unlock(%(key)s);

-- name: session_lock_holder
-- Who holds a session advisory lock of a bigint key (classid: high 32 bits, objid: low 32
-- bits, objsubid 1), in this database: what a waiting command tells its user.
SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr, a.state
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = %(key)s
LIMIT 1;

-- name: relation_lock_holders
-- The other sessions holding locks on tables of the schema 'herald': who a migration
-- statement waited for when it gave up after lock_timeout.
SELECT DISTINCT a.pid, a.application_name, a.state,
       extract(epoch FROM now() - a.xact_start)::float8 AS transaction_seconds
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
JOIN pg_class c ON c.oid = l.relation
WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
  AND c.relnamespace = 'herald'::regnamespace
ORDER BY transaction_seconds DESC NULLS LAST
LIMIT 5;

-- name: configure_session
-- Every Herald connection says which process it is (pg_stat_activity.application_name)
-- and never waits for a lock longer than lock_timeout (milliseconds).
SELECT set_config('application_name', %(application_name)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false);

-- name: local_lock_timeout
-- lock_timeout (milliseconds) for the rest of this transaction only: one attempt of a
-- migration.
SELECT set_config('lock_timeout', %(lock_timeout)s, true);
