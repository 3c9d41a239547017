-- Substring search (`q`) without pg_trgm. The embedded server's wheel ships no contrib modules
-- (migration 0007 indexes search with pg_trgm where it exists), and there a search that matches
-- little or nothing scanned all sensors: ~0.2-0.5 s at a million. This is the same idea with
-- built-in parts: the lower-case trigrams of serial and label as a text[], in a GIN index
-- (array_ops); a search asks for rows holding all of its trigrams, then checks them with ILIKE.
-- It covers only serial and label, which a heartbeat never changes, so heartbeats stay HOT.
-- Created only where pg_trgm is absent: where it exists its indexes serve, and an import does
-- not pay for both.
-- PL/pgSQL, not SQL: a SQL function with a subquery is not inlined, and its executor cost ~8 us a
-- call against ~2 us here; it runs for every row an import writes and every candidate a search
-- rechecks. Duplicates are left in (GIN keeps each key once per row).
CREATE FUNCTION sensor_grams(serial text, label text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    t text;
    found text[] := '{}';
BEGIN
    FOREACH t IN ARRAY ARRAY[lower(serial), lower(label)] LOOP
        CONTINUE WHEN t IS NULL;
        FOR i IN 1 .. length(t) - 2 LOOP
            found := found || substr(t, i, 3);
        END LOOP;
    END LOOP;
    RETURN found;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX sensor_grams ON sensor USING gin (sensor_grams(serial, label));
    END IF;
END $$;
