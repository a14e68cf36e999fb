"""The server's routes: TF Serving's REST API, a stream of generated text, health, metrics and
the web page, as one Starlette application (`build_app`).

TF Serving's routes (tensorflow.org/tfx/serving/api_rest), answered the same way:
    GET  /v1/models/NAME[/versions/1]             model status
    GET  /v1/models/NAME[/versions/1]/metadata    signature defs
    POST /v1/models/NAME[/versions/1]:predict     {"signature_name", "instances" | "inputs"}
Errors are {"error": "..."}: 400 for a bad request (the field named), 404 for an unknown model,
version, signature or route (the known ones listed), 413 for a body above --max-body, 503 with
Retry-After when the queue or the stream slots are full.

Extensions:
    POST /v1/models/NAME:stream   {"prompt", "length", "temperature", "top_k", "seed", "label"}
        -> server-sent events: `text` events ({"text": ...}: the prompt, then one per compiled
        block of 64 tokens), then `done` ({"tokens": n}) or `error` ({"error": ...}).
    GET  /healthz                 {"status": "ok", "models": [...]}
    GET  /metrics                 Prometheus text format (server_metrics.py)
    GET  /                        the web page (web/index.html)
    GET  /models                  what the page needs to know of each model
Inputs a request leaves out take the model's serving_defaults (its config_json); a text model's
`seed` is drawn at random per request then. A request that sets `seed` is never merged with
others, so it gets exactly what the SavedModel gives for it alone.
"""

import hmac
import json
import logging
import random
import time
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from textgen.serving.batcher import Batcher
from textgen.serving.server_metrics import ServerMetrics
from textgen.serving.tensor_json import (
    RequestError,
    format_predict,
    parse_predict,
    to_array,
    to_json,
)

log = logging.getLogger("textgen.serve")
STREAM_BLOCK = 64  # tokens per stream_block call (the compiled block of the generation loop)
OPEN_PATHS = ("/", "/healthz")  # answered without --token: the page asks for it itself


class ServeSettings:
    def __init__(
        self,
        max_batch=64,
        batch_timeout_ms=0.0,
        max_queue=256,
        max_streams=16,
        max_length=2000,
        max_body=10 * 2**20,
        token="",
    ):
        self.max_batch, self.batch_timeout_ms, self.max_queue = (
            max_batch,
            batch_timeout_ms,
            max_queue,
        )
        self.max_streams, self.max_length, self.max_body = max_streams, max_length, max_body
        self.token = token


def error_response(error):
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse({"error": str(error)}, status_code=error.status, headers=headers)


def build_app(models, settings):
    """A Starlette app serving `models` (name -> ServedModel) with `settings` (ServeSettings)."""
    metrics = ServerMetrics()
    batchers = {}
    active = {"streams": 0}

    def batcher(model):
        if model.name not in batchers:
            batchers[model.name] = Batcher(
                model,
                settings.max_batch,
                settings.batch_timeout_ms / 1000,
                settings.max_queue,
                metrics,
            )
        return batchers[model.name]

    def lookup(name):
        if name not in models:
            known = ", ".join(sorted(models))
            raise RequestError(
                f"Servable not found for request: Latest({name}); models: {known}", 404
            )
        return models[name]

    async def read_json(request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body:
            raise RequestError(
                f"the body ({declared} bytes) is above --max-body {settings.max_body}", 413
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body:
                raise RequestError(f"the body is above --max-body {settings.max_body} bytes", 413)
        try:
            return json.loads(body)  # accepts NaN and Infinity, as TF Serving's parser does
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(f"malformed JSON: {error}") from None

    def parse_path(rest):
        """'NAME[/versions/V|/labels/L][/metadata][:verb]' -> (name, metadata?, verb)."""
        verb = None
        if ":" in rest.rsplit("/", 1)[-1]:
            rest, verb = rest.rsplit(":", 1)
        parts = rest.split("/")
        name, parts = parts[0], parts[1:]
        if parts[:1] in (["versions"], ["labels"]) and len(parts) >= 2:
            if parts[0] == "versions" and parts[1] != "1":
                raise RequestError(
                    f"version {parts[1]} of model {name} not found; it has version 1", 404
                )
            parts = parts[2:]
        metadata = parts == ["metadata"]
        if parts not in ([], ["metadata"]) or verb not in (None, "predict", "stream"):
            raise RequestError(
                f"no such endpoint /v1/models/{rest}{':' + verb if verb else ''}", 404
            )
        return name, metadata, verb

    async def models_route(request):
        endpoint = request.method.lower()
        started = time.monotonic()
        name = "-"
        try:
            name, metadata, verb = parse_path(request.path_params["rest"])
            model = lookup(name)
            if verb is None:
                if request.method != "GET":
                    raise RequestError("use GET for model status and metadata", 405)
                endpoint = "metadata" if metadata else "status"
                response = JSONResponse(model.metadata() if metadata else model.status())
            elif request.method != "POST":
                raise RequestError(f"use POST for :{verb}", 405)
            elif verb == "predict":
                endpoint = "predict"
                response = JSONResponse(await predict(model, await read_json(request)))
            else:
                endpoint = "stream"
                return await stream(model, await read_json(request), started)
        except RequestError as error:
            response = error_response(error)
        except Exception as error:  # noqa: BLE001 - one request's failure, the server goes on
            log.exception("internal error")
            response = JSONResponse({"error": f"internal error: {error}"}, status_code=500)
        metrics.requests.labels(name, endpoint, str(response.status_code)).inc()
        metrics.latency.labels(name, endpoint).observe(time.monotonic() - started)
        return response

    async def predict(model, body):
        if not isinstance(body, dict):
            raise RequestError('the body must be a JSON object with "instances" or "inputs"')
        signature = model.signature(body.get("signature_name"))
        specs = model.inputs[signature]
        defaults = dict(model.defaults)
        if "seed" in specs and "seed" not in defaults:
            defaults["seed"] = random.randrange(2**31)
        inputs, row_format, given = parse_predict(body, specs, defaults)
        model.check_lengths(inputs, settings.max_length)
        outputs = await batcher(model).predict(signature, inputs, mergeable="seed" not in given)
        return format_predict(outputs, row_format, model.batched_outputs(signature))

    async def stream(model, body, started):
        if "stream_block" not in model.signatures:
            raise RequestError(
                f"model {model.name} cannot stream: it has no stream_block signature (a text "
                "model exported by an older textgen; export it again)",
                404,
            )
        if not isinstance(body, dict) or not isinstance(body.get("prompt", ""), str):
            raise RequestError('the body must be a JSON object with a string "prompt"')
        known = {"prompt", "length", "temperature", "top_k", "seed", "label"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise RequestError(
                f"unknown field {', '.join(unknown)}; a stream takes {', '.join(sorted(known))}"
            )
        values = {**model.defaults, "seed": random.randrange(2**31), "prompt": "", **body}
        start_specs, block_specs = model.inputs["stream_start"], model.inputs["stream_block"]
        start_inputs = {"prompt": to_array([values["prompt"]], start_specs["prompt"], "prompt")}
        if "label" in start_specs:
            start_inputs["label"] = to_array(
                [values.get("label", "")], start_specs["label"], "label"
            )
        sampler_inputs = {}
        for name, specs, inputs in (
            ("length", start_specs, start_inputs),
            ("temperature", block_specs, sampler_inputs),
            ("top_k", block_specs, sampler_inputs),
            ("seed", block_specs, sampler_inputs),
        ):
            if name not in values:
                raise RequestError(f"missing field {name}")
            inputs[name] = to_array(values[name], specs[name], name)
        model.check_lengths(start_inputs, settings.max_length)
        if active["streams"] >= settings.max_streams:
            raise RequestError(
                f"all {settings.max_streams} stream slots are busy; retry shortly", 503
            )
        active["streams"] += 1
        metrics.active_streams.set(active["streams"])
        runner = batcher(model)
        try:
            first = await runner.run_in_thread(model.call, "stream_start", start_inputs)
        except BaseException:
            active["streams"] -= 1
            metrics.active_streams.set(active["streams"])
            raise
        spaced = model.config.get("level") == "word" and model.config.get("segmenter") != "jieba"
        state_names = [n for n in first if n.startswith("state_")]

        async def events():
            finished = False
            try:
                text = to_json(first["prompt"][0], "prompt")
                yield sse("text", {"text": text})
                total, tokens = int(first["num_new"][0]), first["token_ids"]
                states = {n: first[n] for n in state_names}
                for start in range(0, total, STREAM_BLOCK):
                    inputs = {
                        "start": start,
                        "count": min(STREAM_BLOCK, total - start),
                        "token_ids": tokens,
                        **states,
                        **sampler_inputs,
                    }
                    if "label" in block_specs:
                        inputs["label"] = start_inputs["label"]
                    block = await runner.run_in_thread(model.call, "stream_block", inputs)
                    metrics.stream_blocks.labels(model.name).inc()
                    tokens, states = block["token_ids"], {n: block[n] for n in state_names}
                    piece = to_json(block["text"][0], "text")
                    if spaced and text and piece:
                        piece = " " + piece
                    text += piece
                    yield sse("text", {"text": piece})
                yield sse("done", {"tokens": total})
                finished = True
            except RequestError as error:
                yield sse("error", {"error": str(error)})
                finished = True
            finally:
                active["streams"] -= 1
                metrics.active_streams.set(active["streams"])
                if not finished:
                    metrics.stream_cancelled.labels(model.name).inc()
                metrics.requests.labels(model.name, "stream", "200").inc()
                metrics.latency.labels(model.name, "stream").observe(time.monotonic() - started)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def healthz(request):
        return JSONResponse({"status": "ok", "models": sorted(models)})

    async def metrics_route(request):
        for name, runner in batchers.items():
            metrics.queue_depth.labels(name).set(runner.depth())
        return Response(metrics.render(), media_type=metrics.content_type)

    async def model_list(request):
        return JSONResponse({"models": [m.describe() for m in models.values()]})

    page = resources.files("textgen.serving").joinpath("web/index.html").read_text("utf-8")

    async def index(request):
        return HTMLResponse(page)

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 404)
        return JSONResponse(
            {
                "error": f"no such endpoint {request.method} {request.url.path}"
                if status == 404
                else exc.detail
            },
            status_code=status,
        )

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/metrics", metrics_route),
            Route("/models", model_list),
            Route("/v1/models/{rest:path}", models_route, methods=["GET", "POST"]),
        ],
        exception_handlers={HTTPException: not_found},
        middleware=[Middleware(BearerToken, token=settings.token)],
    )

    app.state.metrics = metrics
    app.state.batchers = batchers
    app.state.active = active
    return app


class BearerToken:
    """With --token, every route but the page and /healthz needs `Authorization: Bearer TOKEN`
    (a plain ASGI middleware, so streams pass through untouched)."""

    def __init__(self, app, token):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if self.token and scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {self.token}".encode()):
                response = JSONResponse(
                    {"error": "missing or wrong bearer token: send Authorization: Bearer <token>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def sse(event, data):
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
