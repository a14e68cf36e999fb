"""`python -m textgen.serve` as a process: where it listens, a client that leaves mid-stream,
SIGTERM with a request in flight, and one line for a bad start."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from helpers import SMALL_TEXT  # noqa: E402

pytestmark = pytest.mark.integration


def start_server(*arguments):
    """A server process on a free port; returns (process, base URL)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen.serve", *arguments, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"on (http://\S+?)/ ", line)
        if found:
            # Keep reading stderr so that the server never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, found.group(1)
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines))


@pytest.fixture(scope="module")
def text_run(train_tiny_run):
    return train_tiny_run("serve_process", SMALL_TEXT * 3, max_steps=10)


@pytest.fixture(scope="module")
def server(text_run):
    # A run directory, exported on the fly.
    process, url = start_server(f"{text_run}=tiny", "--max-length", "200000", "--max-streams", "1")
    yield url
    process.terminate()
    process.wait(30)


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def metric(url, name):
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def open_stream(url, length):
    """A raw socket that has sent a :stream request and read its first two events."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    body = json.dumps({"prompt": "the ", "length": length, "temperature": 1.0}).encode()
    sock.sendall(
        b"POST /v1/models/tiny:stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"event: text") < 2:
        received += sock.recv(65536)
    return sock, received


def test_listens_on_localhost_only_by_default(server):
    assert server.startswith("http://127.0.0.1:")
    assert get_json(server + "/healthz") == {"status": "ok", "models": ["tiny"]}


def test_a_client_that_leaves_mid_stream_stops_its_generation_and_frees_its_slot(server):
    blocks_before = metric(server, "textgen_serve_stream_blocks_total")
    sock, received = open_stream(server, 150_000)  # 2,344 blocks if nobody stopped it
    assert received.startswith(b"HTTP/1.1 200")
    assert metric(server, "textgen_serve_active_streams") == 1
    left = time.monotonic()
    sock.close()
    while metric(server, "textgen_serve_active_streams") != 0:
        assert time.monotonic() - left < 10, "the slot was not freed"
        time.sleep(0.02)
    freed_after = time.monotonic() - left
    blocks = metric(server, "textgen_serve_stream_blocks_total") - blocks_before
    assert blocks < 1000, f"{blocks} blocks: generation went on after the client left"
    assert metric(server, "textgen_serve_streams_cancelled_total") == 1
    print(f"slot freed {freed_after * 1000:.0f} ms after the client left; {blocks:.0f} blocks made")
    # The one slot (--max-streams 1) is free again: a new stream runs to its end.
    sock, received = open_stream(server, 100)
    while b"event: done" not in received:
        received += sock.recv(65536)
    sock.close()


def test_sigterm_finishes_the_request_in_flight_then_exits_0(text_run):
    process, url = start_server(f"{text_run}=tiny", "--max-length", "200000")
    sock, received = open_stream(url, 20_000)
    process.send_signal(signal.SIGTERM)
    sock.settimeout(60)
    while b"event: done" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the stream ended before its done event"
        received += chunk
    sock.close()
    assert process.wait(60) == 0
    with pytest.raises(OSError):  # no longer accepting
        urllib.request.urlopen(url + "/healthz", timeout=5)


def test_a_model_path_that_is_neither_an_export_nor_a_run_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "textgen.serve", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}: neither a SavedModel")
    )
    assert "Traceback" not in done.stderr


def test_the_listening_socket_says_tcp_so_nagle_is_turned_off():
    # asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it every keep-alive
    # answer waited 40 ms for the client's delayed ACK (22 req/s on /healthz instead of 5,700).
    from textgen.serving.server import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
