#!/usr/bin/env python3
# ruff: noqa  -- a copy of shared harness code, kept close to the original for diffing
# COPY of ../shared/bench-peers/overhead.py (shared project material, measured the peers on
# 2026-11-27), kept here so llmmeter is measured beside its peers in the same run.  Changes from
# the shared original, all marked "llmmeter copy:":
#   * setup_llmmeter() is implemented (llmmeter.configure(...) + llmmeter.instrument_openai());
#   * the SSE usage chunk reports completion_tokens = N + 16, so that the 16 reasoning tokens are
#     a subset of the output (the original said N, i.e. fewer output than reasoning tokens for
#     N < 16, which llmmeter's pricing rejects as inconsistent usage); peers only copy the numbers;
#   * --count: the callgrind mode (instructions per call / per chunk, see run_count()), driven by
#     benchmarks/peers/count_instructions.py;
#   * Telemetry.flush() runs the instrumentation's drains first (llmmeter.flush(): llmmeter ends
#     spans and records metric points on its pipeline thread), so each counted block holds all of
#     its calls' work, not only what ran before the call returned.
"""Per-request CPU overhead of LLM-telemetry instrumentations on the `openai` client.

One process measures ONE variant (instrumentors monkey-patch globally, so every
variant needs a fresh interpreter).  No network is used: the openai client gets an
httpx(2) client whose MockTransport serves pre-built response bodies from memory.

Every variant gets the same OpenTelemetry SDK pipeline:
  * TracerProvider + BatchSpanProcessor (or SimpleSpanProcessor, --processor simple)
    feeding CountingSpanExporter, which counts spans and drops them;
  * MeterProvider + InMemoryMetricReader (delta temporality, read between scenarios);
  * LoggerProvider + Batch/SimpleLogRecordProcessor feeding CountingLogExporter.
The baseline sets up the same pipeline and installs no instrumentation.

Output: one JSON line per (variant, scenario) on stdout ("type": "result"), one
"meta" line with versions and one "fit" line per mode (streaming cost = a + b*N);
a small Markdown table goes to stderr.  bench/summarize.py aggregates the runs that
bench/run_all.sh makes.

--ab runs the in-process A/B mode instead: after the variant's setup the patched
attributes of openai.* are switched off (A) and on (B) in alternating blocks of calls
inside the same process, which cancels the machine-speed drift that dominates
separate-process comparisons on a shared VM ("type": "ab" lines).

Usage:
  python overhead.py --variant baseline
  python overhead.py --variant otel-v2 --scenarios chat-sync,stream-sync
  python overhead.py --variant openllmetry --scenarios leak
  python overhead.py --variant openlit --ab
  python overhead.py --variant llmmeter --check
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import importlib
import importlib.metadata as md
import json
import os
import platform
import resource
import statistics
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

VARIANTS = [
    "baseline",
    "otel-v2",  # opentelemetry-instrumentation-openai-v2 (official OTel contrib)
    "openllmetry",  # opentelemetry-instrumentation-openai (Traceloop / OpenLLMetry)
    "openinference",  # openinference-instrumentation-openai (Arize)
    "langfuse",  # `from langfuse.openai import openai` drop-in
    "openlit",  # openlit.init(), openai instrumentor only
    "llmmeter",  # the SDK under development (stub hook below)
]

EXIT_UNAVAILABLE = 3  # variant's package is not installed / not usable
EXIT_INACTIVE = 4  # instrumentation produced no (or the wrong number of) spans

# --------------------------------------------------------------------------------------
# Canned request / response data (built once, served from memory)
# --------------------------------------------------------------------------------------
MODEL = "gpt-4o-mini"
RESP_MODEL = "gpt-4o-mini-2024-07-18"
EMBED_MODEL = "text-embedding-3-small"
EMBED_DIM = 1536
MESSAGES = [
    {
        "role": "system",
        "content": "You are a concise assistant that answers questions about "
        "distributed systems. Answer in at most three sentences.",
    },
    {
        "role": "user",
        "content": "Explain in plain words why a write-ahead log makes crash "
        "recovery possible, and what fsync has to do with it.",
    },
]
ANSWER = (
    "A write-ahead log records every change before it is applied to the data files, so "
    "after a crash the database can replay the log to redo committed work and undo "
    "incomplete work. fsync forces the log records from the OS page cache onto durable "
    "storage; only once it returns may the commit be acknowledged, otherwise a power loss "
    "could drop a transaction the client believes is committed."
)
USAGE = {
    "prompt_tokens": 52,
    "completion_tokens": 88,
    "total_tokens": 140,
    "prompt_tokens_details": {"cached_tokens": 32, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 16,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
CREATED = 1764230400


def build_chat_body() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": CREATED,
            "model": RESP_MODEL,
            "system_fingerprint": "fp_bench01",
            "service_tier": "default",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        },
        separators=(",", ":"),
    ).encode()


def build_sse_events(n_chunks: int) -> list[bytes]:
    """N content chunks, a finish chunk, a usage chunk, then [DONE]; one bytes per event."""
    words = ANSWER.split(" ")
    base = {
        "id": "chatcmpl-bench0002",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": RESP_MODEL,
        "system_fingerprint": "fp_bench01",
        "service_tier": "default",
    }

    def ev(obj) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    events = []
    for i in range(n_chunks):
        delta = {"content": (" " if i else "") + words[i % len(words)]}
        if i == 0:
            delta = {"role": "assistant", "content": words[0], "refusal": None}
        events.append(
            ev({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})
        )
    events.append(
        ev({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
    )
    # llmmeter copy: completion_tokens counts the 16 reasoning tokens too (reasoning ⊆ output)
    out_tokens = n_chunks + USAGE["completion_tokens_details"]["reasoning_tokens"]
    events.append(
        ev(
            {
                **base,
                "choices": [],
                "usage": {**USAGE, "completion_tokens": out_tokens, "total_tokens": 52 + out_tokens},
            }
        )
    )
    events.append(b"data: [DONE]\n\n")
    return events


def build_embedding_bodies() -> tuple[bytes, bytes]:
    vec = [((i * 7919) % 2000 - 1000) / 1000.0 for i in range(EMBED_DIM)]
    common = {"object": "list", "model": EMBED_MODEL, "usage": {"prompt_tokens": 12, "total_tokens": 12}}
    as_floats = json.dumps(
        {**common, "data": [{"object": "embedding", "index": 0, "embedding": vec}]}
    ).encode()
    b64 = base64.b64encode(struct.pack(f"<{EMBED_DIM}f", *vec)).decode()
    as_b64 = json.dumps({**common, "data": [{"object": "embedding", "index": 0, "embedding": b64}]}).encode()
    return as_floats, as_b64


# --------------------------------------------------------------------------------------
# Telemetry pipeline shared by all variants
# --------------------------------------------------------------------------------------
def setup_telemetry(processor: str, attach_span_processor: bool = True):
    from opentelemetry import _logs, metrics, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        LogRecordExporter,
        LogRecordExportResult,
        SimpleLogRecordProcessor,
    )
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class CountingSpanExporter(SpanExporter):
        """Counts exported spans and drops them; remembers the shape of a few."""

        SAMPLE = 3

        def __init__(self):
            self.count = 0
            self.samples: list[dict] = []

        def export(self, spans):
            if len(self.samples) < self.SAMPLE:
                for s in spans[: self.SAMPLE - len(self.samples)]:
                    self.samples.append(
                        {
                            "scope": s.instrumentation_scope.name if s.instrumentation_scope else None,
                            "name": s.name,
                            "attrs": sorted((s.attributes or {}).keys()),
                            "events": [e.name for e in s.events],
                        }
                    )
            self.count += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    class CountingLogExporter(LogRecordExporter):
        def __init__(self):
            self.count = 0
            self.names: set[str] = set()

        def export(self, batch):
            for rec in batch[:4]:
                lr = getattr(rec, "log_record", rec)
                name = getattr(lr, "event_name", None) or (lr.attributes or {}).get("event.name")
                if name:
                    self.names.add(str(name))
            self.count += len(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    resource_ = Resource.create({"service.name": "openai-overhead-bench"})
    span_exporter = CountingSpanExporter()
    tp = TracerProvider(resource=resource_)
    if attach_span_processor:
        tp.add_span_processor(
            BatchSpanProcessor(span_exporter) if processor == "batch" else SimpleSpanProcessor(span_exporter)
        )
    delta = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(
        preferred_temporality={Counter: delta, Histogram: delta, ObservableCounter: delta}
    )
    mp = MeterProvider(resource=resource_, metric_readers=[reader])
    log_exporter = CountingLogExporter()
    lp = LoggerProvider(resource=resource_)
    lp.add_log_record_processor(
        BatchLogRecordProcessor(log_exporter)
        if processor == "batch"
        else SimpleLogRecordProcessor(log_exporter)
    )
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    _logs.set_logger_provider(lp)
    return Telemetry(tp, mp, lp, reader, span_exporter, log_exporter, processor)


class Telemetry:
    def __init__(self, tp, mp, lp, reader, span_exporter, log_exporter, processor):
        self.tracer_provider, self.meter_provider, self.logger_provider = tp, mp, lp
        self.reader, self.span_exporter, self.log_exporter = reader, span_exporter, log_exporter
        self.processor = processor

    def flush(self):
        # llmmeter copy: an instrumentation that finishes its records on a thread of its own
        # (llmmeter's pipeline) drains it first, so that each block counts all of its work.
        for drain in getattr(self, "drains", ()):
            drain()
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()

    def reset(self):
        """Flush, then zero the counters and drain the metric reader."""
        self.flush()
        self.span_exporter.count = 0
        self.span_exporter.samples.clear()
        self.log_exporter.count = 0
        self.log_exporter.names.clear()
        self.reader.get_metrics_data()

    def collect(self) -> dict:
        self.flush()
        out_metrics: dict[str, dict] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    entry = out_metrics.setdefault(metric.name, {"points": 0, "recordings": 0})
                    for p in metric.data.data_points:
                        entry["points"] += 1
                        if hasattr(p, "count"):  # histogram
                            entry["recordings"] += p.count
                        elif hasattr(p, "value"):  # sum / gauge
                            entry["recordings"] += 1
        return {
            "spans": self.span_exporter.count,
            "span_samples": list(self.span_exporter.samples),
            "log_records": self.log_exporter.count,
            "log_event_names": sorted(self.log_exporter.names),
            "metrics": out_metrics,
        }


# --------------------------------------------------------------------------------------
# Variants.  Each returns a dict of hooks:
#   openai_module: module whose OpenAI / AsyncOpenAI classes build the client
#   wrap_client:   callable applied to each client (identity unless the SDK wraps clients)
#   expects_spans: True when every call must produce exactly one span
#   config:        free-form notes recorded in the meta line
# --------------------------------------------------------------------------------------
class VariantUnavailable(RuntimeError):
    pass


def _content_env(capture: str):
    """Optional override of each tool's prompt/completion capture (default: tool default)."""
    if capture == "default":
        return
    on = capture == "on"
    # opentelemetry-util-genai (used by openai-v2 >= 2.x) wants an enum here and logs a
    # warning on *every call* for anything else (e.g. "true"/"false")
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY" if on else "NO_CONTENT"
    os.environ["TRACELOOP_TRACE_CONTENT"] = "true" if on else "false"
    for var in (
        "INPUTS",
        "OUTPUTS",
        "INPUT_MESSAGES",
        "OUTPUT_MESSAGES",
        "EMBEDDINGS_TEXT",
        "EMBEDDINGS_VECTORS",
        "EMBEDDING_VECTORS",
    ):
        os.environ[f"OPENINFERENCE_HIDE_{var}"] = "false" if on else "true"
    # langfuse has no switch for this: its openai integration always records input/output;
    # openlit gets capture_message_content=False in setup_openlit()


def _require(dist: str, module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise VariantUnavailable(f"{dist} cannot be imported ({e})") from e


def setup_baseline(tel, args):
    import openai

    return {"openai_module": openai, "expects_spans": False, "config": {}}


def setup_otel_v2(tel, args):
    # NB: with opentelemetry-util-genai >= 1.1b0, is_experimental_mode() is always True, so
    # OTEL_SEMCONV_STABILITY_OPT_IN no longer selects a different code path.
    mod = _require("opentelemetry-instrumentation-openai-v2", "opentelemetry.instrumentation.openai_v2")
    mod.OpenAIInstrumentor().instrument(
        tracer_provider=tel.tracer_provider,
        meter_provider=tel.meter_provider,
        logger_provider=tel.logger_provider,
    )
    import openai

    return {
        "openai_module": openai,
        "expects_spans": True,
        "config": {
            "capture_content_env": os.environ.get(
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "unset (default: off)"
            )
        },
    }


def setup_openllmetry(tel, args):
    mod = _require("opentelemetry-instrumentation-openai", "opentelemetry.instrumentation.openai")
    mod.OpenAIInstrumentor().instrument(
        tracer_provider=tel.tracer_provider,
        meter_provider=tel.meter_provider,
        logger_provider=tel.logger_provider,
    )
    import openai

    return {
        "openai_module": openai,
        "expects_spans": True,
        "config": {"capture_content_env": os.environ.get("TRACELOOP_TRACE_CONTENT", "unset (default: on)")},
    }


def setup_openinference(tel, args):
    mod = _require("openinference-instrumentation-openai", "openinference.instrumentation.openai")
    mod.OpenAIInstrumentor().instrument(tracer_provider=tel.tracer_provider)
    import openai

    return {
        "openai_module": openai,
        "expects_spans": True,
        "config": {
            "hide_inputs_env": os.environ.get("OPENINFERENCE_HIDE_INPUTS", "unset (default: record)"),
            "metrics": "none (OpenInference is span-only)",
        },
    }


def setup_langfuse(tel, args):
    # Langfuse adds its own LangfuseSpanProcessor (a BatchSpanProcessor subclass) to the
    # provider it is given; we hand it our provider (without our processor, see main())
    # and our counting exporter, so nothing is sent anywhere.  The base URL points at a
    # closed loopback port in case anything tries to talk to a server anyway.
    lf = _require("langfuse", "langfuse")
    lf.Langfuse(
        public_key="pk-lf-bench",
        secret_key="sk-lf-bench",
        base_url="http://127.0.0.1:9",
        tracer_provider=tel.tracer_provider,
        span_exporter=tel.span_exporter,
    )
    from langfuse.openai import openai  # the documented drop-in

    return {
        "openai_module": openai,
        "expects_spans": True,
        "config": {
            "span_processor": "LangfuseSpanProcessor (batch) -> counting exporter",
            "metrics": "none client-side (usage/cost computed server-side)",
        },
    }


def setup_openlit(tel, args):
    ol = _require("openlit", "openlit")
    from openlit._instrumentors import MODULE_NAME_MAP

    pricing = HERE / "openlit-pricing.json"  # local file: the default pricing URL needs network
    others = [k for k in MODULE_NAME_MAP if k != "openai"]
    kwargs = {}
    if args.capture == "off":
        kwargs["capture_message_content"] = False
    ol.init(
        service_name="openai-overhead-bench",
        pricing_json=str(pricing),
        disabled_instrumentors=others,
        collect_gpu_stats=False,
        disable_batch=(args.processor == "simple"),
        **kwargs,
    )
    import openai

    return {
        "openai_module": openai,
        "expects_spans": True,
        "config": {
            "pricing_json": "bench/openlit-pricing.json (local)",
            "instrumentors": "openai only (all others disabled)",
            "note": "openlit declares openai<3; installed with --no-deps next to openai 3.x",
        },
    }


def setup_llmmeter(tel, args):
    """llmmeter copy: the SDK under development, instrumenting every openai client of the process.

    Spans and metrics go to the harness's providers (passed explicitly; llmmeter never replaces
    the global ones), the local SQLite store is off (the peers have none), pricing uses llmmeter's
    bundled price table (it is part of what llmmeter does per call; peers without pricing do not
    pay for it). Content capture is off (llmmeter's default; --capture on turns it on).
    """
    try:
        import llmmeter
    except ImportError as e:
        raise VariantUnavailable(f"llmmeter is not installed ({e})") from e
    import openai

    llmmeter.configure(
        tracer_provider=tel.tracer_provider,
        meter_provider=tel.meter_provider,
        store=None,
        capture_content=args.capture == "on",
    )
    llmmeter.instrument_openai()
    settings = llmmeter.get_settings()
    tel.drains = [llmmeter.flush]  # span ends and metric points run on llmmeter's pipeline thread
    return {
        "openai_module": openai,
        "expects_spans": True,
        "config": {
            "hook": "llmmeter.configure(tracer_provider, meter_provider, store=None) + "
            "llmmeter.instrument_openai()",
            "pricing": "bundled" if settings.pricing is not None else "off",
            "capture_content": settings.capture_content,
        },
    }


SETUP = {
    "baseline": setup_baseline,
    "otel-v2": setup_otel_v2,
    "openllmetry": setup_openllmetry,
    "openinference": setup_openinference,
    "langfuse": setup_langfuse,
    "openlit": setup_openlit,
    "llmmeter": setup_llmmeter,
}

DISTS = {
    "baseline": [],
    "otel-v2": ["opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai"],
    "openllmetry": ["opentelemetry-instrumentation-openai", "opentelemetry-semantic-conventions-ai"],
    "openinference": ["openinference-instrumentation-openai", "openinference-instrumentation"],
    "langfuse": ["langfuse"],
    "openlit": ["openlit"],
    "llmmeter": ["llmmeter"],
}


def _version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------
# Mock HTTP layer
# --------------------------------------------------------------------------------------
def http_module(choice: str):
    if choice == "auto":
        try:
            importlib.import_module("openai._httpx2")  # openai>=3 is built on httpx2
            choice = "httpx2"
        except ImportError:
            choice = "httpx"
    return choice, __import__(choice)


class _AsyncListIter:
    __slots__ = ("_it",)

    def __init__(self, items):
        self._it = iter(items)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None


class MockServer:
    """Routes requests to in-memory bodies. `stream_events` selects the SSE body."""

    def __init__(self, hx):
        self.hx = hx
        self.chat_body = build_chat_body()
        self.embed_floats, self.embed_b64 = build_embedding_bodies()
        self.stream_events: list[bytes] = build_sse_events(1)
        self.json_headers = [(b"content-type", b"application/json"), (b"x-request-id", b"req_bench")]
        self.sse_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"x-request-id", b"req_bench"),
        ]
        self.unexpected = 0

        outer = self

        class EventStream(hx.SyncByteStream, hx.AsyncByteStream):
            def __iter__(self):
                return iter(outer.stream_events)

            def __aiter__(self):
                # a plain async iterator (not an async generator), so an abandoned stream
                # leaves nothing for the event loop to finalize
                return _AsyncListIter(outer.stream_events)

        self.EventStream = EventStream

    def handle(self, request):
        hx = self.hx
        path = request.url.path
        if path.endswith("/chat/completions"):
            if b'"stream":true' in request.content.replace(b" ", b""):
                return hx.Response(200, headers=self.sse_headers, stream=self.EventStream())
            return hx.Response(200, headers=self.json_headers, content=self.chat_body)
        if path.endswith("/embeddings"):
            body = self.embed_b64 if b"base64" in request.content else self.embed_floats
            return hx.Response(200, headers=self.json_headers, content=body)
        self.unexpected += 1
        return hx.Response(404, headers=self.json_headers, content=b'{"error":{"message":"not mocked"}}')


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------
BLOCKS = 10


def _stats(samples, wall_ns, cpu_ns, iters):
    """Per-process summary.  Block statistics split the calls into BLOCKS contiguous
    blocks and take the mean of each: the fastest block is the least disturbed by other
    load on the machine but still contains the amortised costs (GC, exporter threads)."""
    s = sorted(samples)
    k = max(1, min(BLOCKS, iters))
    edges = [round(i * iters / k) for i in range(k + 1)]
    blocks = [sum(samples[a:b]) / (b - a) for a, b in zip(edges, edges[1:]) if b > a]
    return {
        "us_per_call_blockmin": min(blocks) / 1e3,
        "us_per_call_blockmed": statistics.median(blocks) / 1e3,
        "us_per_call_mean": wall_ns / iters / 1e3,
        "us_per_call_median": statistics.median(s) / 1e3,
        "us_per_call_p10": s[int(0.10 * (len(s) - 1))] / 1e3,
        "us_per_call_p90": s[int(0.90 * (len(s) - 1))] / 1e3,
        "cpu_us_per_call": cpu_ns / iters / 1e3,
    }


def measure_sync(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    return _timed_sync(fn, iters)


def _timed_sync(fn, iters):
    samples = [0] * iters
    pc = time.perf_counter_ns
    gc.collect()
    c0, t0 = time.process_time_ns(), pc()
    for i in range(iters):
        s = pc()
        fn()
        samples[i] = pc() - s
    t1, c1 = pc(), time.process_time_ns()
    return _stats(samples, t1 - t0, c1 - c0, iters)


async def _timed_async(fn, iters):
    samples = [0] * iters
    pc = time.perf_counter_ns
    gc.collect()
    c0, t0 = time.process_time_ns(), pc()
    for i in range(iters):
        s = pc()
        await fn()
        samples[i] = pc() - s
    t1, c1 = pc(), time.process_time_ns()
    return _stats(samples, t1 - t0, c1 - c0, iters)


def make_calls(sync_client, async_client):
    chat_kw = dict(model=MODEL, messages=MESSAGES, temperature=0.2, max_tokens=256)
    stream_kw = dict(chat_kw, stream=True, stream_options={"include_usage": True})

    def chat_sync():
        r = sync_client.chat.completions.create(**chat_kw)
        return r

    async def chat_async():
        return await async_client.chat.completions.create(**chat_kw)

    def stream_sync():
        n = 0
        for _ in sync_client.chat.completions.create(**stream_kw):
            n += 1
        return n

    async def stream_async():
        n = 0
        async for _ in await async_client.chat.completions.create(**stream_kw):
            n += 1
        return n

    def embed_sync():
        return sync_client.embeddings.create(model=EMBED_MODEL, input="write-ahead logging")

    async def embed_async():
        return await async_client.embeddings.create(model=EMBED_MODEL, input="write-ahead logging")

    return {
        "chat-sync": chat_sync,
        "chat-async": chat_async,
        "stream-sync": stream_sync,
        "stream-async": stream_async,
        "embed-sync": embed_sync,
        "embed-async": embed_async,
    }


def rss_kib():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return None


def peak_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def detect_features(collected_all: list[dict]) -> dict:
    """Look for TTFT / TPOT / cost signals in metric names, span attributes and events."""
    metric_names, attr_keys, event_names, log_names = set(), set(), set(), set()
    for c in collected_all:
        metric_names.update(c["metrics"].keys())
        for s in c["span_samples"]:
            attr_keys.update(s["attrs"])
            event_names.update(s["events"])
        log_names.update(c.get("log_event_names", []))
    everything = metric_names | attr_keys | event_names

    def hits(*needles):
        return sorted(x for x in everything if any(n in x.lower() for n in needles))

    return {
        "ttft": hits(
            "time_to_first", "ttft", "first_token", "first_chunk", "first token", "completion_start"
        ),
        "tpot": hits(
            "time_per_output", "tpot", "per_output_token", "per_output_chunk", "time_between", "generate"
        ),
        "cost": hits("cost"),
        "metric_names": sorted(metric_names),
        "span_event_names": sorted(event_names),
        "log_event_names": sorted(log_names),
    }


# --------------------------------------------------------------------------------------
# In-process A/B mode (--ab): the same process alternates short blocks of calls with the
# instrumentation switched off (A) and on (B), so both sides see the same machine state.
# Switching works by snapshotting every callable attribute of the already-imported
# openai.* modules and of the classes they define, before and after the variant's setup,
# and swapping the differing attributes back and forth.  Spans are counted per block:
# A blocks must produce none, B blocks one per call, which proves the switch is complete
# for everything that emits telemetry.
# --------------------------------------------------------------------------------------
_MISSING = object()


def _patchable(v):
    return v is not _MISSING and (callable(v) or isinstance(v, (property, classmethod, staticmethod)))


def _snapshot_openai():
    snap = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "openai" or name.startswith("openai.")):
            continue
        for k, v in list(vars(mod).items()):
            snap[(mod, None, k)] = v
            if isinstance(v, type) and getattr(v, "__module__", None) == name:
                for ck, cv in list(vars(v).items()):
                    snap[(mod, v, ck)] = cv
    return snap


class PatchSwitch:
    def __init__(self, before, after):
        self.diff = []
        old_modules = {id(mod) for (mod, _, _) in before}
        for key, new in after.items():
            mod, cls, attr = key
            if id(mod) not in old_modules:
                continue  # module first imported by the variant's setup: not on our path
            if cls is not None and before.get((mod, None, cls.__name__)) is not cls:
                continue  # class that did not exist before
            old = before.get(key, _MISSING)
            if old is not new and (_patchable(old) or _patchable(new)):
                self.diff.append((key, old, new))
        self.state = "B"

    def describe(self):
        out = []
        for (mod, cls, k), _, _ in self.diff:
            out.append(f"{mod.__name__}.{cls.__name__ + '.' if cls else ''}{k}")
        return sorted(out)

    def set(self, state):
        if state == self.state:
            return
        for (mod, cls, k), old, new in self.diff:
            target = cls if cls is not None else mod
            value = old if state == "A" else new
            if value is _MISSING:
                try:
                    delattr(target, k)
                except AttributeError:
                    pass
            else:
                setattr(target, k, value)
        self.state = state


def _block_sync(fn, m):
    pc = time.perf_counter_ns
    t0 = pc()
    for _ in range(m):
        fn()
    return pc() - t0


async def _block_async(fn, m):
    pc = time.perf_counter_ns
    t0 = pc()
    for _ in range(m):
        await fn()
    return pc() - t0


def run_ab(args, tel):
    import openai

    http_name, hx = http_module(args.http)
    server = MockServer(hx)
    common = dict(api_key="sk-bench", base_url="https://api.openai.com/v1", max_retries=0)
    raw_sync = openai.OpenAI(http_client=hx.Client(transport=hx.MockTransport(server.handle)), **common)

    async def ahandle(request):
        return server.handle(request)

    raw_async = openai.AsyncOpenAI(http_client=hx.AsyncClient(transport=hx.MockTransport(ahandle)), **common)
    loop = asyncio.new_event_loop()
    arun = loop.run_until_complete
    # touch every code path once so the modules on it are imported before the snapshot
    raw_calls = make_calls(raw_sync, raw_async)
    server.stream_events = build_sse_events(4)
    for name, fn in raw_calls.items():
        arun(fn()) if name.endswith("async") else fn()
    before = _snapshot_openai()

    def close():
        raw_sync.close()
        arun(raw_async.close())
        arun(loop.shutdown_asyncgens())
        loop.close()

    try:
        hooks = SETUP[args.variant](tel, args)
    except VariantUnavailable as e:
        print(json.dumps({"type": "unavailable", "variant": args.variant, "reason": str(e)}))
        print(f"[{args.variant}] UNAVAILABLE: {e}", file=sys.stderr)
        close()
        return EXIT_UNAVAILABLE
    switch = PatchSwitch(before, _snapshot_openai())
    wrap = hooks.get("wrap_client")
    if wrap is not None:  # per-client wrapping: B uses wrapped clients, no patch switch needed
        b_calls = make_calls(wrap(raw_sync), wrap(raw_async))
    else:
        b_calls = raw_calls
    expects = hooks["expects_spans"]
    if expects and wrap is None and not switch.diff:
        print(f"[{args.variant}] no patched attributes found under openai.*", file=sys.stderr)
        close()
        return EXIT_INACTIVE
    meta = {
        "type": "meta",
        "mode": "ab",
        "variant": args.variant,
        "round": args.round,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "http": http_name,
        "processor": args.processor,
        "capture": args.capture,
        "versions": {d: _version(d) for d in ["openai", "httpx2", "opentelemetry-sdk", *DISTS[args.variant]]},
        "config": hooks.get("config", {}),
        "switched": switch.describe(),
    }
    print(json.dumps(meta), flush=True)

    sc = lambda n: max(1, int(n * args.scale))  # noqa: E731
    plan = []  # (scenario, mode, n_chunks, pairs, calls per block)
    for scen in [s for s in args.scenarios.split(",") if s]:
        mode = scen.split("-")[1]
        if scen.startswith("chat"):
            plan.append((scen, mode, None, 10, sc(100)))
        elif scen.startswith("embed"):
            plan.append((scen, mode, None, 10, sc(50)))
        elif scen.startswith("stream"):
            for n in [int(x) for x in args.chunks.split(",") if x]:
                m = {1: 100, 64: 25}.get(n, max(1, 2048 // n))
                plan.append((scen, mode, n, 10 if n < 512 else 8, sc(m)))
    failures = []
    for scen, mode, n, pairs, m in plan:
        if n is not None:
            server.stream_events = build_sse_events(n)

        def block(state):
            switch.set(state)
            fn = (b_calls if state == "B" else raw_calls)[scen]
            return _block_sync(fn, m) if mode == "sync" else arun(_block_async(fn, m))

        for st in ("A", "B", "A", "B"):
            block(st)  # warm-up, both states
        us = {"A": [], "B": []}
        spans = {"A": 0, "B": 0}
        for i in range(pairs):
            for st in ("A", "B") if i % 2 == 0 else ("B", "A"):
                switch.set(st)
                tel.reset()
                gc.collect()
                us[st].append(block(st) / m / 1e3)
                tel.flush()
                spans[st] += tel.span_exporter.count
        switch.set("B")
        deltas = [b - a for a, b in zip(us["A"], us["B"])]
        ok = spans["A"] == 0 and (spans["B"] == pairs * m if expects else spans["B"] == 0)
        if not ok:
            failures.append(f"{scen} N={n}: spans A={spans['A']} B={spans['B']}")
        row = {
            "type": "ab",
            "variant": args.variant,
            "round": args.round,
            "scenario": scen,
            "mode": mode,
            "n_chunks": n,
            "pairs": pairs,
            "block_calls": m,
            "A_us": us["A"],
            "B_us": us["B"],
            "A_us_median": statistics.median(us["A"]),
            "B_us_median": statistics.median(us["B"]),
            "A_us_min": min(us["A"]),
            "B_us_min": min(us["B"]),
            "delta_us_median": statistics.median(deltas),
            "delta_us_mean": statistics.fmean(deltas),
            "ratio_median": statistics.median(us["B"]) / statistics.median(us["A"]),
            "spans_A": spans["A"],
            "spans_B": spans["B"],
            "spans_B_expected": pairs * m if expects else 0,
            "spans_ok": ok,
        }
        print(json.dumps(row), flush=True)
        print(
            f"[ab {args.variant}] {scen} N={n}: A {row['A_us_median']:.0f} µs, "
            f"B {row['B_us_median']:.0f} µs, Δ {row['delta_us_median']:+.0f} µs "
            f"(×{row['ratio_median']:.2f}) spans A/B {spans['A']}/{spans['B']}",
            file=sys.stderr,
        )
    close()
    if failures:
        print(f"[{args.variant}] A/B SPAN CHECK FAILED: {'; '.join(failures)}", file=sys.stderr)
        if not args.no_assert:
            return EXIT_INACTIVE
    return 0


# --------------------------------------------------------------------------------------
# llmmeter copy: callgrind mode (--count).  Same setup and patch switch as --ab; instead of
# timing blocks, every block is bracketed by two os.getsid(0) markers, and
# `valgrind --tool=callgrind --dump-before=os_getsid` dumps the instruction counters at each
# marker, so one valgrind run counts every block exactly.  Blocks per scenario: A and B with K
# calls, then A and B with 2K calls; (I(2K) - I(K)) / K cancels each block's constant costs
# (gc, span flush).  The block labels go to stdout as {"type": "segment"} JSON lines, in order;
# count_instructions.py runs valgrind and pairs the dumps with them.
# --------------------------------------------------------------------------------------
COUNT_PLAN = (
    "chat-sync:4,chat-async:4,stream-sync/1:4,stream-sync/64:2,stream-async/1:4,"
    "stream-async/64:2,embed-sync:4"
)


def _marker_block(label, run, tel):
    gc.collect()
    print(json.dumps({"type": "segment", "label": label}), flush=True)
    os.getsid(0)
    run()
    tel.flush()
    os.getsid(0)


def run_count(args, tel):
    import openai

    _, hx = http_module(args.http)
    server = MockServer(hx)
    common = dict(api_key="sk-bench", base_url="https://api.openai.com/v1", max_retries=0)
    raw_sync = openai.OpenAI(http_client=hx.Client(transport=hx.MockTransport(server.handle)), **common)

    async def ahandle(request):
        return server.handle(request)

    raw_async = openai.AsyncOpenAI(http_client=hx.AsyncClient(transport=hx.MockTransport(ahandle)), **common)
    loop = asyncio.new_event_loop()
    arun = loop.run_until_complete
    raw_calls = make_calls(raw_sync, raw_async)
    server.stream_events = build_sse_events(4)
    for name, fn in raw_calls.items():
        arun(fn()) if name.endswith("async") else fn()
    before = _snapshot_openai()
    try:
        hooks = SETUP[args.variant](tel, args)
    except VariantUnavailable as e:
        print(json.dumps({"type": "unavailable", "variant": args.variant, "reason": str(e)}))
        return EXIT_UNAVAILABLE
    switch = PatchSwitch(before, _snapshot_openai())
    wrap = hooks.get("wrap_client")
    b_calls = make_calls(wrap(raw_sync), wrap(raw_async)) if wrap is not None else raw_calls
    print(
        json.dumps(
            {
                "type": "meta",
                "mode": "count",
                "variant": args.variant,
                "versions": {
                    d: _version(d) for d in ["openai", "httpx2", "opentelemetry-sdk", *DISTS[args.variant]]
                },
                "config": hooks.get("config", {}),
            }
        ),
        flush=True,
    )
    for item in [x for x in args.count_plan.split(",") if x]:
        scen, k = item.split(":")
        k = int(k)
        scen, _, n = scen.partition("/")
        if n:
            server.stream_events = build_sse_events(int(n))
        is_async = scen.endswith("async")

        def block(state, m, scen=scen, is_async=is_async):
            switch.set(state)
            fn = (b_calls if state == "B" else raw_calls)[scen]

            def run():
                if is_async:

                    async def go():
                        for _ in range(m):
                            await fn()

                    arun(go())
                else:
                    for _ in range(m):
                        fn()

            return run

        for st in ("A", "B", "A", "B"):
            block(st, 2)()  # warm-up, both states
        tel.reset()
        label = scen + (f"/{n}" if n else "")
        for m in (k, 2 * k):
            for st in ("A", "B"):
                _marker_block(f"{label}/{st}@{m}", block(st, m), tel)
        switch.set("B")
    raw_sync.close()
    arun(raw_async.close())
    arun(loop.shutdown_asyncgens())
    loop.close()
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", required=True, choices=VARIANTS)
    ap.add_argument(
        "--scenarios",
        default="chat-sync,chat-async,stream-sync,stream-async,embed-sync,embed-async",
        help="comma list of chat-sync, chat-async, stream-sync, stream-async, embed-sync, embed-async, leak",
    )
    ap.add_argument("--chunks", default="1,64,512", help="SSE content-chunk counts N")
    ap.add_argument("--iters", type=int, default=2000, help="non-streaming calls per scenario")
    ap.add_argument(
        "--stream-iters", default="1:1000,64:500,512:60", help="streaming calls per N (N:iters,...)"
    )
    ap.add_argument("--embed-iters", type=int, default=1000)
    ap.add_argument("--leak-calls", type=int, default=20000)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply all iteration counts")
    ap.add_argument("--processor", choices=["batch", "simple"], default="batch")
    ap.add_argument(
        "--capture",
        choices=["default", "on", "off"],
        default="default",
        help="prompt/completion content capture: each tool's default, or forced",
    )
    ap.add_argument("--http", choices=["auto", "httpx", "httpx2"], default="auto")
    ap.add_argument("--round", type=int, default=0)
    ap.add_argument(
        "--check", action="store_true", help="set up the variant, make a few calls, verify spans; exit 0/3/4"
    )
    ap.add_argument(
        "--ab",
        action="store_true",
        help="in-process A/B: alternate blocks with the instrumentation "
        "switched off/on (paired, robust to machine-speed drift)",
    )
    ap.add_argument(
        "--count",
        action="store_true",
        help="llmmeter copy: callgrind mode, A/B blocks bracketed by os.getsid "
        "markers (run it through count_instructions.py)",
    )
    ap.add_argument(
        "--count-plan",
        default=COUNT_PLAN,
        help="scenario[/N]:K,... blocks of K and 2K calls per state (--count)",
    )
    ap.add_argument(
        "--no-assert", action="store_true", help="report but do not fail on span-count mismatches"
    )
    args = ap.parse_args(argv)

    _content_env(args.capture)

    # Langfuse attaches its own batch processor to the provider; ours would double-process.
    tel = setup_telemetry(args.processor, attach_span_processor=args.variant != "langfuse")
    if args.ab:
        return run_ab(args, tel)
    if args.count:
        return run_count(args, tel)
    try:
        hooks = SETUP[args.variant](tel, args)
    except VariantUnavailable as e:
        print(json.dumps({"type": "unavailable", "variant": args.variant, "reason": str(e)}))
        print(f"[{args.variant}] UNAVAILABLE: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE

    http_name, hx = http_module(args.http)
    server = MockServer(hx)
    oa = hooks["openai_module"]
    wrap = hooks.get("wrap_client", lambda c: c)
    common = dict(api_key="sk-bench", base_url="https://api.openai.com/v1", max_retries=0)
    sync_client = wrap(oa.OpenAI(http_client=hx.Client(transport=hx.MockTransport(server.handle)), **common))

    async def ahandle(request):
        return server.handle(request)

    async_client = wrap(
        oa.AsyncOpenAI(http_client=hx.AsyncClient(transport=hx.MockTransport(ahandle)), **common)
    )
    calls = make_calls(sync_client, async_client)
    expects = hooks["expects_spans"]

    versions = {
        d: _version(d)
        for d in ["openai", "httpx", "httpx2", "opentelemetry-api", "opentelemetry-sdk", *DISTS[args.variant]]
    }
    meta = {
        "type": "meta",
        "variant": args.variant,
        "round": args.round,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "http": http_name,
        "processor": args.processor,
        "capture": args.capture,
        "versions": versions,
        "config": hooks.get("config", {}),
    }
    print(json.dumps(meta), flush=True)

    loop = asyncio.new_event_loop()
    arun = loop.run_until_complete
    sc = lambda n: max(1, int(n * args.scale))  # noqa: E731
    chunk_ns = [int(x) for x in args.chunks.split(",") if x]
    stream_iters = dict((int(k), int(v)) for k, v in (kv.split(":") for kv in args.stream_iters.split(",")))
    rows, collected_all, failures = [], [], []

    def sanity():
        """One call of each kind; validates the mock and the client plumbing."""
        r = calls["chat-sync"]()
        assert r.usage.prompt_tokens == 52 and r.choices[0].message.content == ANSWER, r
        assert r.usage.prompt_tokens_details.cached_tokens == 32
        assert r.usage.completion_tokens_details.reasoning_tokens == 16
        server.stream_events = build_sse_events(8)
        assert calls["stream-sync"]() == 8 + 2, "stream chunk count"
        assert arun(calls["stream-async"]()) == 8 + 2
        e = calls["embed-sync"]()
        assert len(e.data[0].embedding) == EMBED_DIM
        assert server.unexpected == 0

    def record(scenario, mode, n, iters, warmup, stats):
        c = tel.collect()
        collected_all.append(c)
        ok = (c["spans"] == iters) if expects else (c["spans"] == 0)
        row = {
            "type": "result",
            "variant": args.variant,
            "round": args.round,
            "scenario": scenario,
            "mode": mode,
            "n_chunks": n,
            "iters": iters,
            "warmup": warmup,
            **stats,
            "spans": c["spans"],
            "spans_expected": iters if expects else 0,
            "spans_ok": ok,
            "log_records": c["log_records"],
            "metrics": c["metrics"],
            "span_sample": c["span_samples"][:1],
        }
        if not ok:
            failures.append(f"{scenario}: spans={c['spans']} expected={row['spans_expected']}")
        rows.append(row)
        print(json.dumps(row), flush=True)

    sanity()

    if args.check:
        tel.reset()
        for _ in range(3):
            calls["chat-sync"]()
        c = tel.collect()
        feats = detect_features([c])
        ok = (c["spans"] == 3) if expects else c["spans"] == 0
        print(
            json.dumps(
                {
                    "type": "check",
                    "variant": args.variant,
                    "spans": c["spans"],
                    "expected": 3 if expects else 0,
                    "ok": ok,
                    "features": feats,
                }
            )
        )
        sync_client.close()
        arun(async_client.close())
        arun(loop.shutdown_asyncgens())
        loop.close()
        return 0 if ok else EXIT_INACTIVE

    scenarios = [s for s in args.scenarios.split(",") if s]
    for scen in scenarios:
        if scen in ("chat-sync", "chat-async", "embed-sync", "embed-async"):
            iters = sc(args.iters if scen.startswith("chat") else args.embed_iters)
            warmup = max(20, iters // 10)
            fn = calls[scen]
            if scen.endswith("sync") and not scen.endswith("async"):
                for _ in range(warmup):
                    fn()
                tel.reset()
                stats = _timed_sync(fn, iters)
            else:

                async def go():
                    for _ in range(warmup):
                        await fn()

                arun(go())
                tel.reset()
                stats = arun(_timed_async(fn, iters))
            record(scen, scen.split("-")[1], None, iters, warmup, stats)
        elif scen in ("stream-sync", "stream-async"):
            mode = scen.split("-")[1]
            fn = calls[scen]
            for n in chunk_ns:
                server.stream_events = build_sse_events(n)
                iters = sc(stream_iters.get(n, 200))
                warmup = max(10, iters // 10)
                if mode == "sync":
                    for _ in range(warmup):
                        fn()
                    tel.reset()
                    stats = _timed_sync(fn, iters)
                else:

                    async def go():
                        for _ in range(warmup):
                            await fn()

                    arun(go())
                    tel.reset()
                    stats = arun(_timed_async(fn, iters))
                record(scen, mode, n, iters, warmup, stats)
            pts = [
                (r["n_chunks"], r["us_per_call_mean"])
                for r in rows
                if r["scenario"] == scen and r["n_chunks"] is not None
            ]
            if len(pts) >= 2:
                xs, ys = zip(*pts)
                mx, my = statistics.fmean(xs), statistics.fmean(ys)
                slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x in xs)
                fit = {
                    "type": "fit",
                    "variant": args.variant,
                    "round": args.round,
                    "scenario": scen,
                    "mode": mode,
                    "points": pts,
                    "us_per_chunk": slope,
                    "us_fixed": my - slope * mx,
                }
                print(json.dumps(fit), flush=True)
        elif scen == "leak":
            total = sc(args.leak_calls)
            server.stream_events = build_sse_events(8)
            chat, stream = calls["chat-sync"], calls["stream-sync"]
            for i in range(1000):
                (chat if i % 2 == 0 else stream)()
            tel.reset()
            gc.collect()
            rss0, peak0 = rss_kib(), peak_rss_kib()
            marks = []
            t0 = time.perf_counter_ns()
            for i in range(total):
                (chat if i % 2 == 0 else stream)()
                if (i + 1) % (total // 4) == 0:
                    gc.collect()
                    marks.append({"calls": i + 1, "rss_kib": rss_kib()})
            wall = time.perf_counter_ns() - t0
            c = tel.collect()
            collected_all.append(c)
            gc.collect()
            half = marks[1]["rss_kib"] if len(marks) >= 2 else rss0
            row = {
                "type": "result",
                "variant": args.variant,
                "round": args.round,
                "scenario": "leak",
                "mode": "sync",
                "n_chunks": 8,
                "iters": total,
                "calls_desc": "alternating non-streaming and 8-chunk streaming, sync",
                "us_per_call_mean": wall / total / 1e3,
                "rss_start_kib": rss0,
                "rss_marks": marks,
                "rss_end_kib": rss_kib(),
                "peak_rss_start_kib": peak0,
                "peak_rss_end_kib": peak_rss_kib(),
                "peak_rss_growth_kib": peak_rss_kib() - peak0,
                "rss_growth_second_half_kib": (marks[-1]["rss_kib"] - half) if marks else None,
                "spans": c["spans"],
                "spans_expected": total if expects else 0,
                "spans_ok": (c["spans"] == total) if expects else c["spans"] == 0,
                "log_records": c["log_records"],
            }
            if not row["spans_ok"]:
                failures.append(f"leak: spans={c['spans']} expected={row['spans_expected']}")
            rows.append(row)
            print(json.dumps(row), flush=True)
        else:
            ap.error(f"unknown scenario {scen}")

    sync_client.close()
    arun(async_client.close())
    arun(loop.shutdown_asyncgens())
    loop.close()

    feats = detect_features(collected_all)
    print(json.dumps({"type": "features", "variant": args.variant, "round": args.round, **feats}), flush=True)

    # Small per-process Markdown table on stderr.
    err = sys.stderr
    print(f"\n### {args.variant} (round {args.round}, {http_name}, {args.processor} processor)", file=err)
    print("| scenario | N | iters | µs/call mean | µs/call median | spans | log recs |", file=err)
    print("|---|---:|---:|---:|---:|---:|---:|", file=err)
    for r in rows:
        print(
            f"| {r['scenario']} | {r['n_chunks'] or ''} | {r['iters']} | "
            f"{r['us_per_call_mean']:.1f} | {r.get('us_per_call_median', float('nan')):.1f} | "
            f"{r['spans']} | {r['log_records']} |",
            file=err,
        )
    if failures:
        msg = "; ".join(failures)
        print(f"[{args.variant}] SPAN COUNT MISMATCH: {msg}", file=err)
        if not args.no_assert:
            return EXIT_INACTIVE
    return 0


if __name__ == "__main__":
    sys.exit(main())
