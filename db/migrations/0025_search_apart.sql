-- The searchable text (serial, label) of the sensors that are not retired, in a table of its
-- own, with the search's trigram index there instead of on `sensor`.
--
-- A transition (online, offline) changes indexed columns, so it is not a HOT update: it
-- inserts into every index of `sensor`, and the trigram index took ~30 keys a row of it (and a
-- call of sensor_grams) for text that never changes. 100,000 transitions in one statement at a
-- million sensors took 5.1-6.0 s with that index and 2.2-3.3 s without, and workload 5's
-- offline lateness (p99) measured 745-794 ms with it and 382-414 without (README, Benchmarks).
-- Here the index is written only when a sensor is added, relabelled, retired or restored.
--
-- One search index on every server: migration 0014's own trigrams (sensor_grams), which need
-- no contrib module; pg_trgm's indexes of migration 0007, where they were made, go with the
-- other. Retired sensors are not here: a search among them reads their own few rows.
--
-- No foreign key: its check, a lookup per row, made a million-sensor seed 1.5-2x slower
-- (12.6 s against 6.7-8.4); triggers remove the rows of deleted sensors instead.
CREATE TABLE sensor_search (
    id     bigint PRIMARY KEY,  -- sensor.id
    serial text COLLATE "C" NOT NULL,
    label  text
);

-- Every session using `sensor` (reports and expiry too) waits until this commits, when the
-- triggers below keep the rows: the copy misses no sensor added, relabelled or retired
-- meanwhile. A short wait: the copy of a million narrow rows takes a second or two. Taken
-- whole at once: dropping the old index needs it anyway, and a weaker lock taken first,
-- then raised, deadlocked with report batches (their FOR UPDATE's lock is granted beside
-- it, their UPDATE's then waits, and the raise waits for them).
LOCK TABLE sensor IN ACCESS EXCLUSIVE MODE;

INSERT INTO sensor_search (id, serial, label)
SELECT id, serial, label FROM sensor WHERE retired_at IS NULL ORDER BY id;

DROP INDEX IF EXISTS sensor_grams;
DROP INDEX IF EXISTS sensor_serial_trgm;
DROP INDEX IF EXISTS sensor_label_trgm;
-- An index left to be built after an import (db/bulk.py) under its old name is not built.
DELETE FROM deferred_index
WHERE name IN ('sensor_grams', 'sensor_serial_trgm', 'sensor_label_trgm');
-- A large fleet's index (~25 s of CPU at a million) is left to a daemon, which builds it
-- without blocking writes (search_index.py); until then searches read every sensor, correct
-- and slower. A small one's is built here.
DO $$
BEGIN
    IF (SELECT count(*) FROM sensor_search) < 20000 THEN
        CREATE INDEX sensor_search_grams ON sensor_search
            USING gin (sensor_grams(serial, label));
    ELSE
        INSERT INTO deferred_index (name, build) VALUES (
            'sensor_search_grams',
            'CREATE INDEX sensor_search_grams ON sensor_search '
            'USING gin (sensor_grams(serial, label))');
    END IF;
END $$;

-- Added sensors, by statement: an import's COPY of a million rows gets one INSERT of them (the
-- rows are the transition table the fleet counters' trigger reads too).
CREATE FUNCTION sensor_search_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sensor_search (id, serial, label)
    SELECT id, serial, label FROM new_rows WHERE retired_at IS NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER sensor_search_insert AFTER INSERT ON sensor
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sensor_search_added();

CREATE FUNCTION sensor_search_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sensor_search s USING old_rows o WHERE s.id = o.id;
    RETURN NULL;
END $$;
CREATE TRIGGER sensor_search_delete AFTER DELETE ON sensor
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION sensor_search_removed();

CREATE FUNCTION sensor_search_emptied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE sensor_search;
    RETURN NULL;
END $$;
CREATE TRIGGER sensor_search_truncate AFTER TRUNCATE ON sensor
    FOR EACH STATEMENT EXECUTE FUNCTION sensor_search_emptied();

-- Relabelled, retired or restored sensors, by row: only statements that set one of these
-- columns fire it (never a report's or an expiry's), and only rows whose text or retirement
-- changed run it.
CREATE FUNCTION sensor_search_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.retired_at IS NOT NULL THEN
        DELETE FROM sensor_search WHERE id = NEW.id;
    ELSE
        INSERT INTO sensor_search (id, serial, label) VALUES (NEW.id, NEW.serial, NEW.label)
        ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, label = excluded.label;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER sensor_search_update AFTER UPDATE OF serial, label, retired_at ON sensor
    FOR EACH ROW
    WHEN (OLD.serial IS DISTINCT FROM NEW.serial OR OLD.label IS DISTINCT FROM NEW.label
          OR (OLD.retired_at IS NULL) <> (NEW.retired_at IS NULL))
    EXECUTE FUNCTION sensor_search_changed();

ANALYZE sensor_search;
