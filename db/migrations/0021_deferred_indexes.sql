-- Indexes a bulk insert left to be built after its commit (db/bulk.py): the search indexes (GIN:
-- pg_trgm's, or 0014's `sensor_grams`), half of a million-sensor import's time when built inside
-- its transaction. Written in the insert's transaction, with the DROP of the index it names, so
-- an index is either there or listed here. A daemon builds each with CREATE INDEX CONCURRENTLY
-- (droneshield/search_index.py) and deletes its row; a build that was interrupted leaves an
-- invalid index of that name, which the next build drops first.
CREATE TABLE deferred_index (
    name text PRIMARY KEY,  -- as an identifier in SQL (quoted where it must be)
    build text NOT NULL,  -- its CREATE INDEX statement, as pg_get_indexdef gives it
    deferred_at timestamptz NOT NULL DEFAULT now()
);
