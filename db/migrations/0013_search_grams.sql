-- Substring search (`q`) without pg_trgm. The embedded server's wheel ships no contrib modules
-- (migration 0007 indexes search with pg_trgm where it exists), and there a search that matches
-- little or nothing scanned all sensors: ~0.2-0.5 s at a million. This is the same idea with
-- built-in parts: the lower-case trigrams of serial and label as a text[], in a GIN index
-- (array_ops); a search asks for rows holding all of its trigrams, then checks them with ILIKE.
-- It covers only serial and label, which a heartbeat never changes, so heartbeats stay HOT.
-- Created only where pg_trgm is absent: where it exists its indexes serve, and an import does
-- not pay for both (this index costs ~10 us a row to maintain, the two trigram ones ~4 us).
CREATE FUNCTION sensor_grams(serial text, label text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY(
    SELECT DISTINCT substr(t, i, 3)
    FROM (VALUES (lower(serial)), (lower(label))) AS s(t), generate_series(1, length(t) - 2) AS i
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX sensor_grams ON sensor USING gin (sensor_grams(serial, label));
    END IF;
END $$;
