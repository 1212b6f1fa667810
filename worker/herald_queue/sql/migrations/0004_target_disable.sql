-- 0004: targets failing for days are disabled (Svix-style). failing_since marks the first
-- failed attempt of the current streak (cleared by a success); auto_paused_cause says why
-- a worker holds the target's jobs: 'gone' (410) or 'failing' (disabled).

ALTER TABLE herald.targets ADD COLUMN failing_since timestamptz;
ALTER TABLE herald.targets ADD COLUMN auto_paused_cause text
    CHECK (auto_paused_cause IN ('gone', 'failing'));
UPDATE herald.targets SET auto_paused_cause = 'gone' WHERE auto_paused_reason IS NOT NULL;
