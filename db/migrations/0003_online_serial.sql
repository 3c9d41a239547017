-- Status filters (`GET /sensors?status=offline|never`) page in serial order among sensors that
-- are not online. Without this index a rare status far along the serial order scanned the serial
-- index (~0.8 s at 1M sensors); with it, ~0.3 ms. `online` changes only on a transition, never on
-- a heartbeat of an online sensor, so heartbeats remain HOT updates.
CREATE INDEX sensor_online_serial ON sensor (online, serial COLLATE "C");
