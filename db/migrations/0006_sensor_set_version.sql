-- Page anchors (0005) were judged fresh by the fleet's size and highest id, which a delete plus
-- an insert that commits late can leave unchanged. A counter bumped by every statement that adds
-- or removes sensors is exact: concurrent bumps serialise on its row, so the value a snapshot
-- sees matches the set of sensors that snapshot sees.
CREATE TABLE sensor_set_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    n        bigint NOT NULL
);
INSERT INTO sensor_set_version (n) VALUES (0);

CREATE FUNCTION sensor_set_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sensor_set_version SET n = n + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER sensor_set_insert AFTER INSERT ON sensor
    FOR EACH STATEMENT EXECUTE FUNCTION sensor_set_changed();
CREATE TRIGGER sensor_set_delete AFTER DELETE ON sensor
    FOR EACH STATEMENT EXECUTE FUNCTION sensor_set_changed();
CREATE TRIGGER sensor_set_truncate AFTER TRUNCATE ON sensor
    FOR EACH STATEMENT EXECUTE FUNCTION sensor_set_changed();

DELETE FROM sensor_anchor;
DELETE FROM sensor_anchor_basis;
ALTER TABLE sensor_anchor_basis DROP COLUMN sensors, DROP COLUMN max_id,
    ADD COLUMN set_version bigint NOT NULL;
