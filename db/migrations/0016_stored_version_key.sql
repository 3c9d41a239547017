-- The version's sort key, stored. `sort=version` ordered by the expression
-- coalesce(version_sort_key(version), ''), whose SQL function (a sub-select, never inlined)
-- costs ~60 us a call: fine along its index, but a filtered listing (`site=`, `q=`, a version
-- filter under another sort) evaluated it for every candidate, ~0.5 s for the 11,000 sensors
-- a search matched at a million. A stored column is read, not computed.
--
-- Each release's key is computed once, on upload (a generated column of `software`), and the
-- batch statement (db/reports.py), which joins the release anyway, copies it with the version.
-- Not a generated column of `sensor`: every heartbeat assigns `version` (the statement sets
-- version = coalesce(known, version)), so each would pay the function. Nor a row trigger: a
-- BEFORE UPDATE trigger fetches and locks each old row once more, and cost heartbeats 3-12 %
-- in an A/B of the batch statement at a million sensors, even with a WHEN that skipped it.
ALTER TABLE software
    ADD COLUMN version_key text NOT NULL GENERATED ALWAYS AS (version_sort_key(version)) STORED;
ALTER TABLE sensor ADD COLUMN version_key text NOT NULL DEFAULT '';

-- One call per release, not per sensor.
UPDATE sensor s SET version_key = sw.version_key FROM software sw WHERE s.version = sw.version;

-- A stored version's key with it, or none: a writer that sets one and not the other fails.
ALTER TABLE sensor ADD CONSTRAINT sensor_version_key
    CHECK ((version IS NULL) = (version_key = ''));

-- The foreign key nulls the version of sensors running a deleted release (no path deletes one
-- that sensors run; the release's row lock keeps reports out meanwhile, see db/software.py):
-- this clears their key first, else the CHECK above would refuse the delete.
CREATE FUNCTION software_forgotten() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sensor SET version = NULL, version_key = '' WHERE version = OLD.version;
    RETURN OLD;
END $$;
CREATE TRIGGER software_forgotten BEFORE DELETE ON software
    FOR EACH ROW EXECUTE FUNCTION software_forgotten();

DROP INDEX sensor_version_serial;
CREATE INDEX sensor_version_serial ON sensor (version_key, serial);

-- Offline sensors by status change and by version. Along (key, serial) a status filter kept
-- what it met: sorted by latest status change, offline sensors came behind every sensor that
-- had just come back online (114,000 rows walked, ~1 s, at a million after a wave of
-- reconnections); sorted by version, behind every never-seen sensor (no version either).
-- Partial, on `NOT online`: a report never inserts into them (a sensor coming online leaves
-- them, and an online one's heartbeat is a HOT update), only going offline does. Indexes
-- that every sensor's row is in cost each update that is not HOT, a sensor coming online
-- included: five more of those (by site and by status, for each order) took 30 % off the
-- batch statement's rate with a tenth of the fleet coming online (four connections, a
-- million sensors, alternated), so a site's listings sort the site's rows instead
-- (db/sensors.py).
CREATE INDEX sensor_offline_changed_serial ON sensor
    ((coalesce(status_changed_at, '-infinity'::timestamptz)), serial) WHERE NOT online;
CREATE INDEX sensor_offline_version_serial ON sensor (version_key, serial)
    WHERE NOT online AND seen_key > '-infinity'::timestamptz;

-- A sensor that was ever seen has changed status at least once, and one with a stored version
-- has reported: sorted by a time, listings of online or offline sensors, or of a version, skip
-- the never-seen sensors' range, which comes first in those orders (db/sensors.py; ~10,000
-- rows walked for nothing at a million sensors with a hundredth unseen). The writer sets
-- last_seen_at, status_changed_at and the version together; rows an older path left seen
-- without a status change take their last report's time.
UPDATE sensor SET status_changed_at = last_seen_at
WHERE last_seen_at IS NOT NULL AND status_changed_at IS NULL;
ALTER TABLE sensor
    ADD CONSTRAINT sensor_seen_changed CHECK (last_seen_at IS NULL OR status_changed_at IS NOT NULL),
    ADD CONSTRAINT sensor_versioned_seen CHECK (version IS NULL OR last_seen_at IS NOT NULL);
