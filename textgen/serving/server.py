"""`serve(config)`: load the models, bind the socket, run the app on uvicorn until SIGTERM/SIGINT.

uvicorn shuts down gracefully on either signal: it stops accepting connections, lets the
requests in flight (streams included) finish, up to `shutdown_timeout` seconds, and returns;
the process then exits 0.
"""

import os
import signal
import socket
import sys
import time

from textgen.errors import UsageError


def parse_model_arguments(arguments):
    """['PATH', 'PATH=NAME', ...] -> [(name, path)], names unique."""
    models = []
    for argument in arguments:
        path, _, name = argument.partition("=")
        name = name or os.path.basename(os.path.normpath(path))
        if not name or any(c in name for c in "/: "):
            raise UsageError(
                f"bad model name {name!r} in {argument!r}: give PATH=NAME, "
                "a NAME without / : or spaces"
            )
        if name in {n for n, _ in models}:
            raise UsageError(f"two models are named {name}; name them with PATH=NAME")
        models.append((name, path))
    return models


def listening_socket(host, port):
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        # proto must say TCP: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on TCP
        # sockets that say so, and with it on every keep-alive answer waits 40 ms for the
        # client's delayed ACK.
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        raise UsageError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); pick another `port`"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config):
    """Serves the models of `config` (a textgen.serve.ServeConfig); returns when stopped."""
    import uvicorn

    from textgen._quiet_import import import_tensorflow_quietly

    import_tensorflow_quietly()  # without TensorFlow's start-up lines on stderr
    from textgen.serving.rest_api import ServeSettings, build_app
    from textgen.serving.served_model import ServedModel

    names = parse_model_arguments(config.models)
    sock = listening_socket(config.host, config.port)  # before the slow part
    models = {}
    for name, path in names:
        model = ServedModel(path, name)
        models[name] = model
        signatures = ", ".join(sorted(model.signatures))
        print(f"loaded {name} from {path}: {model.kind} model; {signatures}", file=sys.stderr)
    settings = ServeSettings(
        max_batch=config.max_batch if config.batching else 1,
        batch_timeout_ms=config.batch_timeout_ms,
        max_queue=config.max_queue,
        max_streams=config.max_streams,
        max_length=config.max_length,
        max_body=config.max_body,
        token=config.token,
    )
    if config.warmup:
        for model in models.values():
            started = time.monotonic()
            if model.warm_up(settings.max_batch):
                took = time.monotonic() - started
                print(f"warmed up {model.name} in {took:.1f} s", file=sys.stderr, flush=True)
    app = build_app(models, settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=config.shutdown_timeout,
            lifespan="off",
        )
    )
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving {', '.join(models)} on http://{shown}:{port}/ (Ctrl-C or SIGTERM stops)",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn re-raises the signal that stopped it once it is done; with this handler in
    # place that is a no-op, so a graceful stop exits 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("stopped", file=sys.stderr)
    return 0
