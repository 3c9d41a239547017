-- Number 0020 was, for a few commits of 2026-12-02, a trigger on `outbox` that NOTIFYed the
-- webhook dispatchers at commit. It was replaced before release: a transaction that NOTIFYs
-- takes a cluster-wide lock at commit, which serialised the writer's commits that queued events
-- (droneshield/dispatcher.py says how the dispatcher is woken now). A database migrated then has
-- 0020 recorded and the trigger in place; this removes it (nothing to do anywhere else). The
-- number 0020 stays unused.
DROP TRIGGER IF EXISTS outbox_queued ON outbox;
DROP FUNCTION IF EXISTS outbox_queued();
