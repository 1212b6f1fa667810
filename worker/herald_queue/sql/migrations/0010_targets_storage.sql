-- 0010: herald.targets is a few rows updated by every batch of completions (delivered
-- counters, circuit state). Page pruning reclaims the old row versions, but only VACUUM
-- records the space in the free-space map, and the default autovacuum threshold (50 dead
-- tuples + 20 %) is reached slowly while pruning counts them down: under steady delivery
-- the table grew to seven times its size before its first autovacuum, 13 minutes in
-- (`herald bench --soak`, docs/benchmarks.md "Soak"); with these settings it is vacuumed
-- about once a minute and stays a third of that. Vacuum it once ten dead row versions are
-- counted, whatever its size, and leave half of each page free so updates stay on their
-- page (HOT). Storage parameters only: nothing is rewritten, no row is read under a lock.

ALTER TABLE herald.targets SET (
    fillfactor = 50,
    autovacuum_vacuum_threshold = 10,
    autovacuum_vacuum_scale_factor = 0
);
