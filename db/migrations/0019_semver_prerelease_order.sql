-- `sort=version` follows semver precedence for pre-releases too. 0007's key appended the
-- pre-release as it is written, so identifiers compared as text: `2.0.0-rc.10` came before
-- `2.0.0-rc.2`. Semver compares them one by one: numbers as numbers, below any alphanumeric
-- identifier (compared as ASCII), and a shorter list first when one is a prefix of the other.
-- Each identifier is now `0` + its length in three digits + the number, or `1` + the text,
-- and ends with `!`, which sorts below every character an identifier may hold, so that
-- `alpha` (`1alpha!`) comes before `alpha-1` and `rc` before `rc.1`. The rest of the key is
-- 0007's: versions without a pre-release keep theirs, and only sensors running a pre-release
-- are rewritten below.
--
-- The keys compare as bytes, so the columns holding them are "C": under a linguistic
-- collation (en_US, as the postgres image has) `-` and `~` are ignored at first, and a
-- release sorted among its own pre-releases.
CREATE OR REPLACE FUNCTION version_sort_key(v text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
DECLARE
    m text[] := regexp_match(v, '^(\d+)\.(\d+)\.(\d+)(?:-([^+]*))?');
    key text;
    part text;
BEGIN
    IF m IS NULL THEN
        RETURN NULL;
    END IF;
    key := lpad(length(m[1])::text, 3, '0') || m[1] || lpad(length(m[2])::text, 3, '0') || m[2]
           || lpad(length(m[3])::text, 3, '0') || m[3];
    IF m[4] IS NULL THEN
        RETURN key || '~';
    END IF;
    key := key || '-';
    FOREACH part IN ARRAY string_to_array(m[4], '.') LOOP
        IF part ~ '^\d+$' THEN
            key := key || '0' || lpad(length(part)::text, 3, '0') || part || '!';
        ELSE
            key := key || '1' || part || '!';
        END IF;
    END LOOP;
    RETURN key;
END $$;

-- A generated column keeps what it computed: made again with the new function.
ALTER TABLE software DROP COLUMN version_key;
ALTER TABLE software ADD COLUMN version_key text COLLATE "C" NOT NULL
    GENERATED ALWAYS AS (version_sort_key(version)) STORED;

ALTER TABLE sensor ALTER COLUMN version_key TYPE text COLLATE "C";
UPDATE sensor s SET version_key = sw.version_key
FROM software sw WHERE s.version = sw.version AND s.version_key <> sw.version_key;
