"""Requests per second and latency of `python -m textgen.serve` under load, with batching on and
off, measured by `wrk` (Debian's package) on 127.0.0.1.

    python bench/serve_load.py [--clients 1,8,32,64] [--seconds 10] [--soak-minutes 5]

The server runs as its own process, serving the bundled Shakespeare model (exported to a
temporary folder first) and the bundled shapes captioner (a run directory, exported by the
server). For each mode (batching on: --max-batch 64; off: --no-batching) and workload:
  * generate: `{"inputs": {"prompt": [""], "length": 100, "temperature": 0.8}}`, 100 new
    characters per request (no seed: requests may be merged);
  * caption: one of the 8 bundled sample scenes per request, b64, `caption` (beam 3);
`wrk -c N` keeps N connections busy, each sending its next request when the last is answered.
Every point runs `--warmup` seconds unmeasured (XLA compiles once per batch size) and then
`--seconds` measured. Reported: requests/s, p50 and p99 latency, non-2xx answers and socket
errors (there must be none: the queue, 256 requests, has room for every client).

Targets, at 32 clients:
  * batching gives >= 4x the requests/s of batching off;
  * p99 latency with batching under 2 x 4 x the single-client latency (the p50 at 1 client,
    batching off);
  * memory flat over a `--soak-minutes` soak at 32 clients with batching on: the server's RSS
    grows < 5% from the end of the first minute to the end (sampled every 10 s).
wrk and the server share this machine's cores; the rates are the pair's, not the server's alone.
"""

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from host import describe_host  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, bodies[counter %% #bodies + 1])
end
"""


def start_server(arguments):
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen.serve", *arguments, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    for line in process.stderr:
        found = re.search(r"on (http://\S+?)/ ", line)
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, found.group(1)
    raise SystemExit("the server did not start")


def wrk(url, script, clients, seconds):
    threads = min(2, clients)
    done = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(clients),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "60s",
            "--latency",
            "-s",
            script,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout

    def duration(text):
        value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[unit]

    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": duration(percentiles["50"]),
        "p99_ms": duration(percentiles["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def show(point):
    return (
        f"{point['requests_per_s']:8.1f} req/s, p50 {point['p50_ms']:7.1f} ms, "
        f"p99 {point['p99_ms']:7.1f} ms, non-2xx {point['non_2xx']}, "
        f"socket errors {point['socket_errors']}"
    )


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def write_bodies(folder):
    generate = os.path.join(folder, "generate.txt")
    with open(generate, "w") as f:
        f.write(json.dumps({"inputs": {"prompt": [""], "length": 100, "temperature": 0.8}}) + "\n")
    caption = os.path.join(folder, "caption.txt")
    samples = os.path.join(ROOT, "data", "samples")
    with open(caption, "w") as f:
        for name in sorted(n for n in os.listdir(samples) if n.endswith(".png")):
            with open(os.path.join(samples, name), "rb") as image:
                data = base64.b64encode(image.read()).decode()
            f.write(json.dumps({"instances": [{"image_bytes": {"b64": data}}]}) + "\n")
    scripts = {}
    for name, bodies in (("generate", generate), ("caption", caption)):
        scripts[name] = os.path.join(folder, f"{name}.lua")
        with open(scripts[name], "w") as f:
            f.write(LUA % bodies)
    return scripts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--soak-minutes", type=float, default=5)
    parser.add_argument("--workloads", default="generate,caption")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install wrk")
    print(describe_host(), flush=True)
    clients = [int(c) for c in args.clients.split(",")]
    folder = tempfile.mkdtemp(prefix="serve-load-")
    scripts = write_bodies(folder)
    export = os.path.join(folder, "shakespeare")
    subprocess.run(
        [sys.executable, "-m", "textgen.export", "data/models/shakespeare", export],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    models = [f"{export}=shakespeare", "data/models/shapes=shapes", "--warmup"]
    results = {}
    for mode, flags in (("batching on", []), ("batching off", ["--no-batching"])):
        process, url = start_server(models + flags)
        try:
            for workload in args.workloads.split(","):
                target = url + (
                    "/v1/models/shakespeare:predict"
                    if workload == "generate"
                    else "/v1/models/shapes:predict"
                )
                for count in clients:
                    wrk(target, scripts[workload], count, args.warmup)
                    point = wrk(target, scripts[workload], count, int(args.seconds))
                    results[(mode, workload, count)] = point
                    print(f"{mode:12s} {workload:8s} {count:3d} clients: {show(point)}", flush=True)
            if mode == "batching on" and args.soak_minutes > 0:
                soak(process, url, scripts["generate"], args.soak_minutes)
        finally:
            process.terminate()
            process.wait(60)
    print()
    for workload in args.workloads.split(","):
        if 32 in clients and 1 in clients and (("batching off", workload, 32) in results):
            on, off = (
                results[("batching on", workload, 32)],
                results[("batching off", workload, 32)],
            )
            single = results[("batching off", workload, 1)]["p50_ms"]
            gain = on["requests_per_s"] / off["requests_per_s"]
            print(
                f"{workload}: at 32 clients batching gives {gain:.2f}x the requests/s of batching "
                f"off (target >= 4x); p99 {on['p99_ms']:.0f} ms = {on['p99_ms'] / single:.1f}x "
                f"the single-client latency {single:.1f} ms (target < 8x)"
            )
    shutil.rmtree(folder, ignore_errors=True)


def soak(process, url, script, minutes):
    """`minutes` at 32 clients; the server's RSS every 10 s."""
    target = url + "/v1/models/shakespeare:predict"
    load = subprocess.Popen(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            "32",
            "-d",
            f"{int(minutes * 60)}s",
            "--timeout",
            "60s",
            "-s",
            script,
            target,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    samples = []
    start = time.monotonic()
    while load.poll() is None:
        samples.append((time.monotonic() - start, rss_mb(process.pid)))
        time.sleep(10)
    out = load.stdout.read()
    after_first_minute = [rss for t, rss in samples if t >= 60] or [samples[-1][1]]
    first, last = after_first_minute[0], samples[-1][1]
    requests = re.search(r"(\d+) requests in", out).group(1)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    refused = non_2xx.group(1) if non_2xx else 0
    growth = 100 * (last - first) / first
    print(
        f"soak, {minutes:g} min at 32 clients, batching on: {requests} requests, non-2xx "
        f"{refused}; server RSS {samples[0][1]:.0f} MB at the start, {first:.0f} MB after 1 min, "
        f"{last:.0f} MB at the end: {growth:+.1f}% (target < 5%); "
        f"max {max(r for _, r in samples):.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
