-- Page anchors: every 1,000th serial of the whole fleet in byte order, so that page N of the
-- unfiltered listing starts at an anchor and skips fewer than 1,000 rows instead of N x limit
-- (OFFSET 500000 costs ~0.3 s at a million sensors; an anchored page ~1 ms).
-- The set of sensors changes only when sensors are provisioned or removed, so the anchors are
-- rebuilt rarely: they are valid while the fleet's size and highest id are those recorded in
-- sensor_anchor_basis (ids are never reused, so any insert or delete changes one of them).
CREATE TABLE sensor_anchor (
    position bigint PRIMARY KEY,
    serial   text COLLATE "C" NOT NULL
);

CREATE TABLE sensor_anchor_basis (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    sensors  bigint NOT NULL,
    max_id   bigint NOT NULL
);
