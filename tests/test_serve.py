"""textgen.serve's REST API in process (httpx against the ASGI app): TF Serving's requests and
answers, batching, streams, metrics, tokens and every kind of bad input. The server process
itself (SIGTERM, clients that leave mid-stream) is in test_serve_process.py, the web page in
test_serve_page.py."""

import asyncio
import base64
import json
import os

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")
import httpx  # noqa: E402
import tensorflow as tf  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from helpers import SMALL_TEXT  # noqa: E402
from textgen import resources  # noqa: E402
from textgen.generation.saved_model import export_saved_model  # noqa: E402
from textgen.network.language_model import LanguageModel  # noqa: E402
from textgen.serving.rest_api import ServeSettings, build_app  # noqa: E402
from textgen.serving.served_model import ServedModel  # noqa: E402

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "data", "samples")


def sample_image(index=0):
    with open(os.path.join(SAMPLES, f"val_{index:06d}.png"), "rb") as f:
        return f.read()


def b64(data):
    return {"b64": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def text_export(train_tiny_run, tmp_path_factory):
    run = train_tiny_run("serve_text", SMALL_TEXT * 3, max_steps=20)
    out = tmp_path_factory.mktemp("serve_export") / "text"
    return export_saved_model(LanguageModel.from_run_directory(run), str(out))


@pytest.fixture(scope="module")
def models(text_export):
    # The captioner from a run directory: exported on the fly, by captioning.export in a child.
    shapes = str(resources.bundled_model("shapes"))
    return {"tiny": ServedModel(text_export, "tiny"), "shapes": ServedModel(shapes, "shapes")}


@pytest.fixture(scope="module")
def direct(text_export, models):
    """The SavedModels loaded as any TF program would: what the server's answers must equal."""
    return {
        "tiny": tf.saved_model.load(text_export),
        "shapes": tf.saved_model.load(models["shapes"].saved_model_path),
    }


def serve(models, requests, **settings):
    """Runs `requests` (an async function of an httpx client) against a fresh app."""
    app = build_app(models, ServeSettings(**settings))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await requests(client)

    return asyncio.run(main())


def generate_directly(direct, prompts, length, temperature=0.0, seed=0):
    out = direct["tiny"].signatures["generate"](
        prompt=tf.constant(prompts),
        length=tf.constant(length),
        temperature=tf.constant(temperature),
        top_k=tf.constant(0),
        seed=tf.constant(seed),
    )
    return [t.decode() for t in out["text"].numpy()]


def caption_directly(direct, images):
    out = direct["shapes"].signatures["caption"](
        image_bytes=tf.constant(images), beam_size=tf.constant(3), max_length=tf.constant(20)
    )
    return [c.decode() for c in out["caption"].numpy()], out["log_prob"].numpy()


# ---- TF Serving's API, with the requests of tensorflow.org/tfx/serving/api_rest ----


def test_status_and_metadata_as_tf_serving_writes_them(models):
    async def requests(client):
        return [
            await client.get("/v1/models/tiny"),
            await client.get("/v1/models/tiny/versions/1"),
            await client.get("/v1/models/shapes/metadata"),
            await client.get("/v1/models/tiny/versions/7"),
        ]

    status, versioned, metadata, wrong_version = serve(models, requests)
    expected = {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert status.json() == expected and versioned.json() == expected
    body = metadata.json()
    assert body["model_spec"] == {"name": "shapes", "signature_name": "", "version": "1"}
    caption = body["metadata"]["signature_def"]["signature_def"]["caption"]
    assert caption["method_name"] == "tensorflow/serving/predict"
    image = caption["inputs"]["image_bytes"]
    assert image["dtype"] == "DT_STRING"
    assert image["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert caption["inputs"]["beam_size"]["tensor_shape"]["dim"] == []
    assert set(caption["outputs"]) == {"caption", "log_prob"}
    assert wrong_version.status_code == 404 and "version 1" in wrong_version.json()["error"]


def test_row_and_columnar_predict_equal_the_saved_model(models, direct):
    prompts = ["the ca", "a die "]  # one length: generate primes them as one batch

    async def requests(client):
        rows = await client.post(
            "/v1/models/tiny:predict",
            json={
                "signature_name": "generate",
                "instances": [{"prompt": p, "length": 30, "temperature": 0.0} for p in prompts],
            },
        )
        columns = await client.post(
            "/v1/models/tiny:predict",
            json={"inputs": {"prompt": prompts, "length": 30, "temperature": 0, "top_k": 0}},
        )
        return rows, columns

    rows, columns = serve(models, requests)
    expected = generate_directly(direct, prompts, 30)
    assert rows.status_code == 200 and rows.json() == {"predictions": expected}
    assert columns.status_code == 200 and columns.json() == {"outputs": expected}


def test_a_b64_image_is_captioned_as_the_saved_model_captions_it(models, direct):
    images = [sample_image(0), sample_image(1)]

    async def requests(client):
        return await client.post(
            "/v1/models/shapes:predict",
            json={"instances": [{"image_bytes": b64(i), "beam_size": 3} for i in images]},
        )

    response = serve(models, requests)
    captions, log_probs = caption_directly(direct, images)
    predictions = response.json()["predictions"]
    assert [p["caption"] for p in predictions] == captions
    assert np.allclose([p["log_prob"] for p in predictions], log_probs)


def test_the_documents_one_input_forms_and_its_404(models, direct):
    """The API document's `{"instances": [1.0, 2.0, 5.0]}`: rows as bare values for a signature
    with one input (a text model's `score`), and its 404 for an unknown model."""
    texts = ["the cat", "a die"]

    async def requests(client):
        rows = await client.post(
            "/v1/models/tiny:predict", json={"signature_name": "score", "instances": texts}
        )
        columns = await client.post(
            "/v1/models/tiny:predict", json={"signature_name": "score", "inputs": texts}
        )
        missing = await client.post("/v1/models/half:predict", json={"instances": [1.0, 5.0]})
        return rows, columns, missing

    rows, columns, missing = serve(models, requests)
    expected = direct["tiny"].signatures["score"](text=tf.constant(texts))
    predictions = rows.json()["predictions"]
    assert [p["characters"] for p in predictions] == [7, 5]
    assert np.allclose([p["log_prob"] for p in predictions], expected["log_prob"].numpy())
    assert np.allclose(columns.json()["outputs"]["log_prob"], expected["log_prob"].numpy())
    assert missing.status_code == 404
    assert missing.json()["error"].startswith("Servable not found for request: Latest(half)")


# ---- bad input: one JSON error with the right status, and the server goes on ----


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/v1/models/tiny:predict", b'{"instances": [', 400, "malformed JSON"),
        ("/v1/models/tiny:predict", b'{"instances": [{"prompt": 3}]}', 400, "prompt"),
        ("/v1/models/tiny:predict", b'{"inputs": {"prompt": [["a"]]}}', 400, "shape"),
        ("/v1/models/tiny:predict", b'{"inputs": {"prompt": ["a"], "colour": 1}}', 400, "colour"),
        ("/v1/models/tiny:predict", b'{"instances": ["a"], "inputs": {}}', 400, "exactly one"),
        ("/v1/models/tiny:predict", b'{"signature_name": "step", "inputs": {}}', 400, "state_0"),
        (
            "/v1/models/tiny:predict",
            b'{"inputs": {"prompt": ["a"], "length": 5001}}',
            400,
            "--max-length",
        ),
        (
            "/v1/models/tiny:predict",
            b'{"inputs": {"prompt": ["ab", "abc"], "length": 9}}',
            400,
            "same number",
        ),
        ("/v1/models/nope:predict", b"{}", 404, "shapes, tiny"),
        (
            "/v1/models/tiny:predict",
            b'{"signature_name": "x", "inputs": ["a"]}',
            404,
            "stream_block",
        ),
        ("/v1/models/tiny:explode", b"{}", 404, "no such endpoint"),
        ("/v2/anything", b"{}", 404, "no such endpoint"),
    ],
)
def test_bad_requests_get_one_json_error_and_the_server_goes_on(models, path, body, status, words):
    async def requests(client):
        bad = await client.post(path, content=body)
        good = await client.post(
            "/v1/models/tiny:predict", json={"inputs": {"prompt": ["a"], "length": 3}}
        )
        return bad, good

    bad, good = serve(models, requests, max_length=2000)
    assert bad.status_code == status
    assert set(bad.json()) == {"error"} and words in bad.json()["error"], bad.json()
    assert good.status_code == 200


def test_a_body_above_max_body_is_413(models):
    async def requests(client):
        return await client.post(
            "/v1/models/tiny:predict", json={"inputs": {"prompt": ["x" * 5000]}}
        )

    response = serve(models, requests, max_body=1000)
    assert response.status_code == 413 and "--max-body" in response.json()["error"]


def test_a_bad_image_is_400_with_the_decoders_message_and_spoils_no_neighbour(models, direct):
    good = [sample_image(2), sample_image(3), sample_image(4)]

    async def requests(client):
        bodies = [{"instances": [{"image_bytes": b64(i)}]} for i in good]
        bodies.insert(1, {"instances": [{"image_bytes": b64(b"not an image")}]})
        return await asyncio.gather(
            *[client.post("/v1/models/shapes:predict", json=b) for b in bodies]
        )

    responses = serve(models, requests, batch_timeout_ms=200)
    assert [r.status_code for r in responses] == [200, 400, 200, 200]
    assert "Unknown image file format" in responses[1].json()["error"]
    captions, _ = caption_directly(direct, good)
    got = [r.json()["predictions"][0]["caption"] for r in responses if r.status_code == 200]
    assert got == captions


# ---- batching ----


def metric(text, name, labels=None):
    """The value of sample `name` (with `labels` among its labels) in Prometheus text."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return sample.value
    return None


def test_concurrent_requests_are_merged_and_each_gets_its_own_answer(models, direct):
    prompts = [f"the {c}" for c in "acdefhik"] + ["s", "yo"]  # two odd lengths: own batches

    async def requests(client):
        responses = await asyncio.gather(
            *[
                client.post(
                    "/v1/models/tiny:predict",
                    json={"instances": [{"prompt": p, "length": 25, "temperature": 0.0}]},
                )
                for p in prompts
            ]
        )
        return responses, (await client.get("/metrics")).text

    responses, metrics = serve(models, requests, batch_timeout_ms=300)
    for prompt, response in zip(prompts, responses):
        assert response.json()["predictions"] == generate_directly(direct, [prompt], 25)
    calls = metric(metrics, "textgen_serve_batch_rows_count", {"model": "tiny"})
    rows = metric(metrics, "textgen_serve_batch_rows_sum", {"model": "tiny"})
    assert rows == len(prompts) and calls <= 4, (calls, rows)  # 8 merged, 2 alone


def test_without_batching_every_request_is_its_own_call(models):
    async def requests(client):
        await asyncio.gather(
            *[
                client.post(
                    "/v1/models/tiny:predict", json={"inputs": {"prompt": ["the a"], "length": 9}}
                )
                for _ in range(4)
            ]
        )
        return (await client.get("/metrics")).text

    metrics = serve(models, requests, max_batch=1, batch_timeout_ms=300)
    assert metric(metrics, "textgen_serve_batch_rows_count", {"model": "tiny"}) == 4


def test_a_seeded_request_gets_what_the_saved_model_gives_it_alone(models, direct):
    async def requests(client):
        return await asyncio.gather(
            *[
                client.post(
                    "/v1/models/tiny:predict",
                    json={
                        "inputs": {"prompt": ["the c"], "length": 40, "temperature": 1.0, "seed": s}
                    },
                )
                for s in (11, 11, 12, 13)
            ]
        )

    responses = serve(models, requests, batch_timeout_ms=200)
    texts = [r.json()["outputs"][0] for r in responses]
    assert texts[0] == texts[1] == generate_directly(direct, ["the c"], 40, 1.0, 11)[0]
    assert texts[2] == generate_directly(direct, ["the c"], 40, 1.0, 12)[0]


def test_a_full_queue_is_503_with_retry_after_and_nothing_else_fails(models):
    async def requests(client):
        return await asyncio.gather(
            *[
                client.post(
                    "/v1/models/tiny:predict", json={"inputs": {"prompt": ["ab"], "length": 200}}
                )
                for _ in range(12)
            ]
        )

    responses = serve(models, requests, max_batch=1, max_queue=2)
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503}, codes
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "queue" in r.json()["error"] for r in refused)


# ---- streams, metrics, tokens ----


def sse_events(text):
    events = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_a_stream_is_the_generate_text_in_blocks(models, direct, temperature):
    async def requests(client):
        return await client.post(
            "/v1/models/tiny:stream",
            json={"prompt": "the ca", "length": 150, "temperature": temperature, "seed": 4},
        )

    response = serve(models, requests)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [e for e, _ in events] == ["text"] * 4 + ["done"]  # the prompt, 144 = 64+64+16
    text = "".join(data["text"] for event, data in events if event == "text")
    assert text == generate_directly(direct, ["the ca"], 150, temperature, 4)[0]


def test_stream_refusals(models):
    async def requests(client):
        return [
            await client.post("/v1/models/shapes:stream", json={"prompt": "a"}),
            await client.post("/v1/models/tiny:stream", json={"prompt": "a", "length": 10**6}),
            await client.post("/v1/models/tiny:stream", json={"prompt": "a", "tone": "dry"}),
            await client.post("/v1/models/tiny:stream", json={"prompt": "a", "length": "long"}),
        ]

    captioner, too_long, unknown, wrong_type = serve(models, requests)
    assert captioner.status_code == 404 and "stream_block" in captioner.json()["error"]
    assert too_long.status_code == 400 and "--max-length" in too_long.json()["error"]
    assert unknown.status_code == 400 and "tone" in unknown.json()["error"]
    assert wrong_type.status_code == 400 and "length" in wrong_type.json()["error"]


def test_metrics_are_prometheus_text_with_requests_latency_batches_and_queue(models):
    async def requests(client):
        await client.post(
            "/v1/models/tiny:predict", json={"inputs": {"prompt": ["a"], "length": 5}}
        )
        await client.post("/v1/models/tiny:predict", content=b"{")
        return await client.get("/metrics")

    response = serve(models, requests)
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = {"model": "tiny", "endpoint": "predict", "code": "200"}
    assert metric(text, "textgen_serve_requests_total", ok) == 1
    assert metric(text, "textgen_serve_requests_total", {**ok, "code": "400"}) == 1
    assert metric(text, "textgen_serve_request_seconds_count", {"model": "tiny"}) == 2
    assert metric(text, "textgen_serve_batch_rows_bucket", {"model": "tiny", "le": "1.0"}) == 1
    assert metric(text, "textgen_serve_queue_depth", {"model": "tiny"}) == 0
    assert metric(text, "textgen_serve_active_streams") == 0


def test_a_token_guards_every_route_but_the_page_and_health(models):
    async def requests(client):
        body = {"inputs": {"prompt": ["a"], "length": 3}}
        return [
            await client.post("/v1/models/tiny:predict", json=body),
            await client.post(
                "/v1/models/tiny:predict", json=body, headers={"Authorization": "Bearer wrong"}
            ),
            await client.post(
                "/v1/models/tiny:predict", json=body, headers={"Authorization": "Bearer s3cret"}
            ),
            await client.get("/metrics"),
            await client.get("/healthz"),
            await client.get("/"),
        ]

    bare, wrong, right, metrics, health, page = serve(models, requests, token="s3cret")
    assert bare.status_code == wrong.status_code == metrics.status_code == 401
    assert bare.headers["www-authenticate"] == "Bearer" and "Bearer" in bare.json()["error"]
    assert right.status_code == health.status_code == page.status_code == 200


def test_a_captioners_serving_defaults_are_its_plain_decoding(models):
    """What a request may leave out takes DecodeOptions' defaults, the plain `caption` output."""
    import dataclasses

    from captioning.inference.loading import DecodeOptions
    from captioning.inference.saved_model import OPTION_INPUTS

    plain = dataclasses.asdict(DecodeOptions())
    defaults = models["shapes"].defaults
    assert set(defaults) == set(OPTION_INPUTS)
    for name, value in defaults.items():
        if name not in ("beam_size", "max_length"):  # the export's own, from its flags
            assert value == plain[name], name


def test_the_page_and_the_model_list(models):
    async def requests(client):
        return await client.get("/"), await client.get("/models"), await client.get("/healthz")

    page, listing, health = serve(models, requests)
    assert 'id="text-panel"' in page.text and 'id="caption-panel"' in page.text
    kinds = {m["name"]: m["kind"] for m in listing.json()["models"]}
    assert kinds == {"tiny": "text", "shapes": "captioner"}
    assert health.json() == {"status": "ok", "models": ["shapes", "tiny"]}
