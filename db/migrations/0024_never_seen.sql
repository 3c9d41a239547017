-- A never-seen sensor has no status change either: listings sorted by status change take the
-- key's never-seen range (no status change) as the never-seen sensors (db/sensors.py). 0016
-- refused a seen sensor without one; this refuses the converse. Every path that sets it sets
-- it on a sensor that reports or is online, so no row breaks it.
ALTER TABLE sensor ADD CONSTRAINT sensor_changed_seen
    CHECK (status_changed_at IS NULL OR last_seen_at IS NOT NULL);

-- Never-seen sensors sorted by version are `seen_key = '-infinity' AND version_key = ''`
-- (db/sensors.py): every never-seen sensor has no stored version. Taken as independent, the
-- two conditions' selectivities multiplied to ~70 expected rows of 9,000 at a million, and the
-- planner ANDed two bitmaps and sorted all the never-seen sensors (125 ms in the database)
-- instead of walking (seen_key, serial) in order (0.6 ms). Statistics of the two columns
-- together know the combination; ANALYZE builds them (autovacuum, or here at once).
CREATE STATISTICS sensor_seen_version (mcv) ON version_key, seen_key FROM sensor;
ANALYZE sensor;
