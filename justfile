# droneshield: what a developer can do (`just --list`).

set dotenv-load := false

# Recipes that take flags start with `@`: just does not echo them, so a secret given as a flag
# (`--api-key`, `--token`) is not printed. Prefer the environment for secrets all the same.

# run everything (database, migrations, seed, daemon, emitter); `-- FLAGS` go to the emitter
dev *args:
    @exec uv run droneshield dev {{args}}

# upload small release PDFs to a running daemon (that of `just dev` unless --url; --out DIR)
demo-uploads *args:
    @uv run python -m emitter demo-uploads {{args}}

# the sensor simulator against a running daemon (`just dev`'s unless told): `just emit compat|fleet|load`
emit *args:
    @uv run python -m emitter {{args}}

# the whole test suite (real PostgreSQL: DATABASE_URL's, else an embedded one). Two pytest
# workers, a test file each at a time: most tests wait on daemons, PostgreSQL and Chromium, so two
# overlap well on two cores (each worker has its own embedded server and template database).
test *args:
    uv run pytest -n 2 --dist loadfile {{args}}

# lint, format check and type check (mypy, strict on droneshield/)
lint:
    uv run ruff check .
    uv run ruff format --check .
    uv run mypy

# format the code
fmt:
    uv run ruff check --fix .
    uv run ruff format .

# regenerate the gRPC code from proto/status.proto (betterproto2, committed)
proto:
    rm -rf droneshield/ingest/proto
    mkdir -p droneshield/ingest/proto
    uv run python -m grpc_tools.protoc -I proto \
        --python_betterproto2_out=droneshield/ingest/proto \
        --python_betterproto2_opt=client_generation=async \
        --python_betterproto2_opt=server_generation=async \
        --python_betterproto2_opt=google_protobuf_descriptors \
        proto/status.proto

# benchmarks against their goals: one summary table, also as JSON; `--quick`, or workload names
bench *args:
    uv run python -m tests.bench {{args}}

# the whole product at fleet scale: `--sensors N --interval S --minutes M --workers W`, `--find-max`
soak *args:
    uv run python -m tests.soak {{args}}
