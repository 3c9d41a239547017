-- Online sensors by status change, as 0016 gave the offline ones theirs. Along the key's index
-- of every sensor, `status=online` kept what it met: sorted by latest status change, online
-- sensors came behind every sensor that had just gone offline. After a wave of 10,000 went
-- offline at a million sensors (a site or a network going dark) the first page filtered 10,250
-- rows: 10 ms in the database with its pages cached, 158 ms at the median through the daemon
-- in `just bench`; 0.5 ms along this index. Partial, on `online`: going offline never inserts
-- into it; coming online does (an update that is not HOT, inserting into every index of the
-- row anyway), and so does a heartbeat that is not a HOT update (3-10 % of them in the bench's
-- batch statement). Measured at a million, the batch statement bringing 40,000 sensors online,
-- alternated three times each way: 14.5-16.8k transitions/s with it, 15.5-18.5k without,
-- within the runs' spread.
CREATE INDEX sensor_online_changed_serial ON sensor
    ((coalesce(status_changed_at, '-infinity'::timestamptz)), serial) WHERE online;
