"""droneshield: fleet presence for drone-detection sensors.

Where a change belongs:

- `domain.py`: what a sensor is (its state, `Status`) and the rules for serials and versions.
  It imports nothing of ours but `errors.py`; everything else speaks its words.
- Rules as plain functions that take `now` and their inputs, no I/O: `wheel.py`, `webhooks.py`
  (signatures, retry schedule, fleet alert), `doorbell.py` (when the dispatcher looks again).
  `targets.py` says where a webhook may send.
- `errors.py`: the domain's errors, by kind and stable code, never a transport's status.
- `X.py`: a behaviour (`reports.py`, `writer.py`, `presence.py`, `hub.py`, `relay.py`,
  `interest.py`, `summary.py`, `uploads.py`, `dispatcher.py` for webhooks, `search_index.py`
  for the indexes an import left to build, …). `db/X.py` holds its SQL (named for its table or
  concern: `db/reports.py`, `db/presence.py`, `db/software.py` for uploads, `db/notify.py` for
  NOTIFY and LISTEN, `db/webhooks.py` for webhooks and their outbox, `db/bulk.py` for imports),
  `web/X.py` its HTTP routes (`web/uploads.py`, `web/summary.py`, …), `ingest/` the gRPC
  edge. Each edge maps domain errors to its statuses in one table (`web/errors.py`,
  `ingest/service.py`).
- `daemon.py` composes the running tree (read top to bottom it is the architecture) and wires
  the parts to each other; no part knows another it does not call.
- Process concerns, one home each: `cli.py` parses and dispatches, `config.py` holds the
  settings (passed down explicitly from the CLI), `logs.py` logging and redaction,
  `signals.py` how a process stops, `db/migrate.py` the migrations a start applies,
  `workers.py` and `children.py` child processes, `devrun.py` `droneshield dev`.
- asyncio-only libraries cross into trio in one module each: `ingest/bridge.py` (grpclib),
  `db/pool.py` and `db/notify.py` (asyncpg), `bus/jetstream.py` (nats-py).
- `bus/`: the relay's transports behind one interface (`bus.Bus`): `bus/notify.py`
  (PostgreSQL NOTIFY), `bus/jetstream.py` (NATS JetStream).
"""
