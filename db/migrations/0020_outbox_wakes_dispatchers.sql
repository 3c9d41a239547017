-- Webhook dispatchers (droneshield/dispatcher.py) LISTEN on `droneshield_outbox` and look for
-- due events when a transaction that queued some commits, instead of every 0.2 s whether or
-- not any webhook exists (ten round trips a second per daemon, an idle daemon's most frequent
-- statement). Whoever wrote the rows, this daemon or another, every dispatcher is told.
--
-- Once per statement, and only if it inserted rows: the writer's and the expiry's statements
-- run their outbox INSERT on every batch, mostly inserting nothing. Measured on PostgreSQL 15:
-- ~4 µs for an empty statement, and 100,000 rows inserted in one ~20 % slower (the transition
-- table), where a row trigger costs nothing empty but ~60 % on such a wave. NOTIFY folds a
-- transaction's identical notifications into one, sent when it commits (none on rollback).
CREATE FUNCTION outbox_queued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM queued) THEN
        PERFORM pg_notify('droneshield_outbox', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_queued AFTER INSERT ON outbox
REFERENCING NEW TABLE AS queued
FOR EACH STATEMENT EXECUTE FUNCTION outbox_queued();
