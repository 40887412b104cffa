"""OpenTelemetry tracing, off unless `GATEWAY_OTEL=true` (install the `otel` extra).

When on: Strawberry's `OpenTelemetryExtension` makes a span per operation (and per resolver), and
OpenTelemetry's httpx instrumentation a client span per upstream request. Spans go to the
process's tracer provider: one set up by the host (`opentelemetry-instrument`), else one made here
exporting OTLP over HTTP as the standard variables say (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, ...). Resolver arguments are not recorded as span
attributes; headers, and so credentials, never are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from strawberry.extensions import SchemaExtension

from gateway.upstreams import UpstreamClient

DEFAULT_SERVICE_NAME = "billing-gateway"


def _no_arguments(kwargs: dict[str, Any], info: Any) -> dict[str, Any]:
    return {}


def operation_extension(tracer_provider: Any = None) -> Callable[[], SchemaExtension]:
    """The schema extension factory that traces operations."""
    from strawberry.extensions.tracing import OpenTelemetryExtension

    return partial(
        OpenTelemetryExtension, arg_filter=_no_arguments, tracer_provider=tracer_provider
    )


def instrument_clients(clients: Iterable[UpstreamClient], tracer_provider: Any = None) -> None:
    """Trace each upstream request of `clients`."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    for client in clients:
        client.instrument(
            partial(HTTPXClientInstrumentor.instrument_client, tracer_provider=tracer_provider)
        )


def configure_tracer_provider() -> None:
    """Install an OTLP-exporting tracer provider, unless the host has installed one."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
