"""The sensor fleet simulator: a separate program that talks to the daemon over gRPC only.

It imports the generated wire code (`droneshield.ingest.proto.status`) and nothing else of the
daemon. It runs on asyncio with grpclib's client and asyncpg, which are asyncio-native: unlike
the daemon, which hosts asyncio libraries inside Trio, the emitter has no Trio component to
supervise, so running it on asyncio avoids a trio↔asyncio crossing on every call (load mode
measures the daemon, not a bridge). Structure is kept the same way: every task lives in an
`asyncio.TaskGroup`, so a failure or Ctrl-C stops all of them and nothing outlives `main`.

Pure logic (version progression, the fleet's timetable, pacing, backoff, percentiles) lives in
plain functions and classes that take `now` and a `random.Random`, so tests drive them directly.
"""
