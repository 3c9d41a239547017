-- Never-seen sensors sorted by version are `seen_key = '-infinity' AND version_key = ''`
-- (db/sensors.py): every never-seen sensor has no stored version. Taken as independent, the
-- two conditions' selectivities multiplied to ~70 expected rows of 9,000 at a million, and the
-- planner ANDed two bitmaps and sorted all the never-seen sensors (125 ms in the database)
-- instead of walking (seen_key, serial) in order (0.6 ms). Statistics of the two columns
-- together know the combination; ANALYZE builds them (autovacuum, or here at once).
CREATE STATISTICS sensor_seen_version (mcv) ON version_key, seen_key FROM sensor;
ANALYZE sensor;
