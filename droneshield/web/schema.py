"""What the OpenAPI document is generated from: the API's models (pydantic, camelCase on the
wire), the error body, and decorators that describe responses a view does not validate (errors
it raises, files it streams)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from quart_schema import DataSource
from quart_schema.validation import (
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
    QUART_SCHEMA_RESPONSE_ATTRIBUTE,
)

F = TypeVar("F", bound=Callable[..., object])


class ApiModel(BaseModel):
    """Fields are snake_case in Python and camelCase on the wire and in the OpenAPI document."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ApiInput(ApiModel):
    """A request body: a field it does not know is refused, not dropped (a misspelt `filters`
    made a webhook meant for one site fire for the whole fleet)."""

    model_config = ConfigDict(extra="forbid")  # merged with ApiModel's


class ErrorDetail(ApiModel):
    code: str
    message: str


class ErrorBody(ApiModel):
    """An error: `code` is stable and machine-readable, `message` is for people."""

    error: ErrorDetail


class Binary:
    """A response that is not JSON; subclasses name the media type (None: no body) and
    describe it in their docstring."""

    media_type: ClassVar[str | None] = "application/octet-stream"


class NoContent(Binary):
    """Done; nothing to say (204)."""

    media_type = None


def responds(status: int, model: type) -> Callable[[F], F]:
    """Document a response without validating it (quart-schema's `validate_response` would
    reject a streamed file, and errors are raised, not returned)."""

    def decorate(view: F) -> F:
        documented = getattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, {})
        documented[status] = (model, None)
        setattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, documented)
        return view

    return decorate


def reads_body(model: type, source: DataSource) -> Callable[[F], F]:
    """Document a request body the view reads by hand (bounded, streamed), for OpenAPI only:
    quart-schema's `validate_request` would read the whole body first."""

    def decorate(view: F) -> F:
        setattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE, (model, source))
        return view

    return decorate


def errors(*statuses: int) -> Callable[[F], F]:
    """Document the error statuses a view can answer with (500 is always possible, and so is
    503: the database could not answer, web/errors.py)."""

    def decorate(view: F) -> F:
        for status in dict.fromkeys((*statuses, 500, 503)):
            view = responds(status, ErrorBody)(view)
        return view

    return decorate
