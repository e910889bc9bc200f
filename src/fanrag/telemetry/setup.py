"""Which OpenTelemetry tracer fanrag's spans go to, if any; decided at each query or ingest, cheaply.

In order:

    use(provider)                 an explicit ``TracerProvider`` (tests; an app that keeps its own);
                                  ``use(None)`` goes back to the rules below
    the global provider           when the app has configured the OpenTelemetry SDK itself (its global
                                  provider is an SDK ``TracerProvider``): fanrag's spans join its traces
    OTEL_EXPORTER_OTLP_ENDPOINT   (or ``..._TRACES_ENDPOINT``) set: fanrag builds one provider for the
                                  process, exporting by OTLP over HTTP (protobuf) in batches; the exporter
                                  reads the other standard ``OTEL_*`` variables itself (headers, timeout,
                                  ``OTEL_SERVICE_NAME``, default ``fanrag``)
    otherwise                     no tracing: nothing of OpenTelemetry is imported

``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it all off. OpenTelemetry is looked for in
``sys.modules`` before anything is imported, so that a process that never configured it never loads it.
An OTLP endpoint set without the ``otel`` extra installed is logged once (the pip command to run), never
raised: tracing must not fail a query.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

TRACER_NAME = "fanrag"
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_explicit: Any = None  # a TracerProvider given to ``use``


def use(provider: Any) -> None:
    """Send fanrag's spans to ``provider`` (an OpenTelemetry ``TracerProvider``); None: the default rules."""
    global _explicit
    _explicit = provider


def tracer() -> Any:
    """The ``Tracer`` fanrag's spans go to now, or None when tracing is off."""
    if _disabled():
        return None
    provider = _explicit or _global_sdk_provider() or (_env_provider() if _endpoint() else None)
    return provider.get_tracer(TRACER_NAME, _version()) if provider is not None else None


def _disabled() -> bool:
    return (os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
            or os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none")


def _endpoint() -> str:
    return next((v for name in ENDPOINT_VARS if (v := os.environ.get(name, "").strip())), "")


def _global_sdk_provider() -> Any:
    """The app's global provider when it is the SDK's (only if both are imported already: an app that
    configured tracing has imported them; looking costs no import)."""
    api, sdk = sys.modules.get("opentelemetry.trace"), sys.modules.get("opentelemetry.sdk.trace")
    if api is None or sdk is None:
        return None
    provider = api.get_tracer_provider()
    return provider if isinstance(provider, sdk.TracerProvider) else None


@functools.cache
def _env_provider() -> Any:
    """One provider per process for ``OTEL_EXPORTER_OTLP_*``; None (logged once) without the extra."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning("%s is set but tracing needs the otel extra (%s): pip install 'fanrag[otel]'",
                    " or ".join(ENDPOINT_VARS), exc.name)
        return None
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or "fanrag"
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the provider flushes its batches at exit.
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fanrag")
    except PackageNotFoundError:
        return "0"
