"""Serve a bundle on Triton Inference Server (HTTP, gRPC, metrics) until stopped.

Runs a real Triton server on this machine (the one PyPI's nvidia-pytriton ships:
`pip install 'gpmask[serve]'`) with the bundle's Restorer behind model `gpmask`:
clients send UINT8 RGB frames [batch, H, W, 3] as input `image` and, optionally, the
request parameter `weather`; they get `restored` and the `weather` each frame was
restored with. Ctrl-C or SIGTERM stops it cleanly. See docs/serving.md and
examples/triton_client.py.

examples:
  gpmask serve bundle/
  gpmask serve bundle/ --weather snow --instances 2 --http-port 9000
  gpmask serve bundle/ --host 0.0.0.0 --max-batch 4 --queue-delay-us 2000
"""

from __future__ import annotations

import argparse

from gpmask.commands.options import add_backend, add_precision, path_argument
from gpmask.commands.triton_options import add_batching, add_routing, batching, routing
from gpmask.sizes import size_argument


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.serve.server import Endpoints

    defaults = Endpoints()
    parser.add_argument("bundle", type=path_argument, help="bundle folder (from gpmask export)")
    parser.add_argument("--host", default=defaults.host,
                        help=f"address to listen on (default {defaults.host}: this machine "
                             "only; 0.0.0.0 for every interface)")
    parser.add_argument("--http-port", type=int, default=defaults.http_port,
                        help=f"HTTP/REST port (default {defaults.http_port})")
    parser.add_argument("--grpc-port", type=int, default=defaults.grpc_port,
                        help=f"gRPC port (default {defaults.grpc_port})")
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                        help=f"Prometheus metrics port (default {defaults.metrics_port})")
    add_routing(parser)
    add_backend(parser)
    add_precision(parser)
    add_batching(parser)
    parser.add_argument("--max-size", type=size_argument, metavar="HxW", default=None,
                        help="largest frame a request may hold (default 2160x3840)")
    parser.add_argument("--log", type=path_argument,
                        help="file for Triton's own log (default: kept in a temporary file "
                             "and quoted only if the server fails)")


def run(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from gpmask.bundle import Bundle
    from gpmask.errors import GpmaskError
    from gpmask.fileio import atomic_path, check_outputs
    from gpmask.serve.server import Endpoints
    from gpmask.serve.triton import MAX_SIZE, ServeSettings, serve_bundle

    check_outputs([args.log], [args.bundle])
    bundle = Bundle.open(args.bundle)
    settings = ServeSettings(args.backend, args.precision, *routing(args),
                             max_size=args.max_size or MAX_SIZE, batching=batching(args),
                             instances=args.instances)
    default = settings.default_weather(bundle)
    endpoints = Endpoints(args.host, args.http_port, args.grpc_port, args.metrics_port)
    stop = threading.Event()
    received: list[str] = []

    def on_signal(number: int, _frame: object) -> None:
        received.append(signal.Signals(number).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with (atomic_path(args.log) if args.log else _nothing()) as log_path, \
                (open(log_path, "wb") if log_path else _nothing()) as log, \
                serve_bundle(bundle, settings, endpoints, log=log) as server:
            print(f"serving {args.bundle} as model 'gpmask' ({'; '.join(server.loaded)}, "
                  f"default weather {default}, {settings.instances} instance(s), "
                  f"{_describe(settings)})", file=sys.stderr)
            print(f"HTTP {endpoints.http_url}  gRPC {endpoints.grpc_url}  metrics "
                  f"{endpoints.metrics_url}  (Ctrl-C or SIGTERM stops)", file=sys.stderr)
            while not stop.wait(0.5):
                if not server.running():
                    raise GpmaskError(f"Triton Inference Server stopped unexpectedly: "
                                      f"{server.log_errors() or 'see its log'}")
            print(f"gpmask: {received[0]} received, stopping", file=sys.stderr)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    print("stopped", file=sys.stderr)
    return 0


def _describe(settings) -> str:
    b = settings.batching
    if not b.dynamic:
        return f"batches of up to {b.max_batch} frames, no dynamic batching"
    return f"dynamic batching up to {b.max_batch} frames, queue delay {b.queue_delay_us} us"


def _nothing():
    import contextlib

    return contextlib.nullcontext(None)
