-- Versions sensors report that were never uploaded: one aggregate row per version (how many
-- reports, first and last seen), never a row per sensor. The batch statement adds to it once
-- per distinct unknown version in a batch (a handful of rows), so heartbeats do not pay per
-- report. A version that gets uploaded leaves the table: from then on it is a release.
CREATE TABLE unreleased_version (
    version       text PRIMARY KEY,                -- canonical semver
    reports       bigint NOT NULL,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
);

CREATE FUNCTION unreleased_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM unreleased_version WHERE version = NEW.version;
    RETURN NULL;
END $$;

CREATE TRIGGER software_released AFTER INSERT ON software
    FOR EACH ROW EXECUTE FUNCTION unreleased_released();
