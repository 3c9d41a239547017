"""Credentials: the API key guards every HTTP write; the bearer token guards gRPC calls (health
checks aside), for grpclib and grpcio clients alike, and a refused call commits nothing."""

from __future__ import annotations

import re

import grpc
import pytest
import trio
from grpclib import Status
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from droneshield import daemon
from droneshield.ingest import auth
from droneshield.web.app import create_app

from .support.grpc_clients import aio
from .support.secure_clients import HOST, bearer, grpcio_send, refused, send

TOKEN = "gr-9f2c41d7e0a4"
API_KEY = "ak-51b3e8c07d2f"
READS = frozenset({"GET", "HEAD", "OPTIONS"})


@pytest.fixture
async def guarded(aio_loop, database_url, settings, nursery) -> daemon.Running:
    """A daemon that needs the gRPC token (and the API key for writes)."""
    secured = settings.replace(grpc_token=TOKEN, api_key=API_KEY)
    return await nursery.start(daemon.run, secured, database_url)


def _write_routes(settings) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    app = create_app(settings, pool=None)
    return sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if not rule.websocket
        for method in rule.methods - READS
    )


async def test_every_write_route_refuses_requests_without_the_key(api_with, settings):
    routes = _write_routes(settings)
    assert ("POST", "/upload") in routes
    with trio.fail_after(20):
        api = await api_with(settings.replace(api_key=API_KEY))
        for method, rule in routes:
            # Placeholders stand for any value: the key is checked before the arguments are
            # (an int placeholder needs a number for the route to match at all).
            path = re.sub(r"<int:\w+>", "1", rule)
            path = path.replace("<", "").replace(">", "").replace("path:", "")
            for headers, code in (
                ({}, "missing_api_key"),
                ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
                ({"Authorization": API_KEY}, "missing_api_key"),
            ):
                response = await api.request(method, path, headers=headers, content=b"x")
                assert response.status_code == 401, (method, rule, headers)
                assert response.json()["error"]["code"] == code


async def test_report_without_the_token_is_unauthenticated_and_not_committed(guarded, db, sensors):
    with trio.fail_after(10):
        missing = await refused(guarded.grpc_port, sensors[0])
        wrong = await refused(guarded.grpc_port, sensors[0], metadata=bearer("guess"))
        basic = await refused(
            guarded.grpc_port, sensors[0], metadata={"authorization": f"Basic {TOKEN}"}
        )
        online = await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[0])
    assert (missing.status, missing.message) == (Status.UNAUTHENTICATED, auth.MISSING)
    assert (wrong.status, wrong.message) == (Status.UNAUTHENTICATED, auth.WRONG)
    assert basic.status == Status.UNAUTHENTICATED
    assert online is False


async def test_report_with_the_token_is_committed(guarded, db, sensors):
    with trio.fail_after(10):
        ack = await send(guarded.grpc_port, sensors[0], metadata=bearer(TOKEN))
        lower = await send(
            guarded.grpc_port, sensors[1], metadata={"authorization": f"bearer {TOKEN}"}
        )
        online = await db.fetchval(
            "SELECT count(*) FROM sensor WHERE online AND serial = ANY($1)", sensors[:2]
        )
    assert ack.message.startswith("online")
    assert lower.message.startswith("online")
    assert online == 2


async def test_grpcio_client_needs_the_token_too(guarded, sensors):
    with trio.fail_after(20):
        ack = await grpcio_send(guarded.grpc_port, sensors[0], metadata=bearer(TOKEN))
        with pytest.raises(grpc.RpcError) as refusal:
            await grpcio_send(guarded.grpc_port, sensors[0])
    assert ack.message.startswith("online")
    assert refusal.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refusal.value.details() == auth.MISSING


async def test_health_is_open_but_reflection_needs_the_token(guarded):
    async def probe() -> tuple[int, Status]:
        channel = Channel(HOST, guarded.grpc_port)
        try:
            health = await HealthStub(channel).Check(HealthCheckRequest(service=""))
            try:
                async with ServerReflectionStub(channel).ServerReflectionInfo.open() as stream:
                    await stream.send_message(ServerReflectionRequest(list_services=""), end=True)
                    await stream.recv_message()
            except Exception as exc:  # grpclib.GRPCError, checked below
                return health.status, exc.status  # type: ignore[attr-defined]
            raise AssertionError("reflection answered without the token")
        finally:
            channel.close()

    with trio.fail_after(10):
        health, reflection = await aio(probe)
    assert health == HealthCheckResponse.SERVING
    assert reflection == Status.UNAUTHENTICATED
