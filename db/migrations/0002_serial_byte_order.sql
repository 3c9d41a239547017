-- The HTTP API lists sensors in byte order of serial (COLLATE "C") whatever the database's
-- default collation, so that keyset cursors and serial-prefix search (`q=`) are index range
-- scans and page the same way on every server. Serials are printable ASCII, so byte order is
-- also the natural order (DS-00000009 before DS-00000010).
-- serial never changes and version changes only on a version transition, so neither index
-- costs heartbeats their HOT updates.
CREATE INDEX sensor_serial_bytes ON sensor (serial COLLATE "C");

DROP INDEX sensor_version_serial;
CREATE INDEX sensor_version_serial ON sensor (version, serial COLLATE "C");
