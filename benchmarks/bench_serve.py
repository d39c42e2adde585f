"""Throughput and latency of ``gpmask serve`` for 1-8 concurrent clients, dynamic batching
on and off, set against the Restorer in this process.

Each client is a thread with its own HTTP client sending one UINT8 frame per request,
``--requests`` requests, as fast as answers come back; throughput is frames answered
per second over the whole round, latency is each request's round trip. The Restorer
row restores the same frames one after another in this process (no network, no
Triton), on the backend the server chose. One server per batching mode, loopback only.

    python benchmarks/bench_serve.py                      # demo model, 256x256
    python benchmarks/bench_serve.py --bundle B --size 720x1280 --requests 8 -o serve.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gpmask.bench.fixtures import prepared_bundle
from gpmask.bench.records import write_record
from gpmask.bench.stats import latency_summary
from gpmask.bundle import Bundle
from gpmask.host import cpu_model, notable_cpu_flags
from gpmask.runtime import Restorer
from gpmask.serve.config import Batching
from gpmask.serve.server import Endpoints, free_port
from gpmask.serve.triton import ServeSettings, serve_bundle
from gpmask.sizes import format_size, parse_size


def client_round(url: str, frame: np.ndarray, weather: str, clients: int,
                 requests: int) -> tuple[float, list[float]]:
    """(frames per second, latencies in ms) of ``clients`` threads sending ``requests``
    requests each."""
    import tritonclient.http as http

    def one_client(_: int) -> list[float]:
        client = http.InferenceServerClient(url, network_timeout=300)
        image = http.InferInput("image", [1, *frame.shape], "UINT8")
        image.set_data_from_numpy(frame[None])
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            client.infer("gpmask", [image], parameters={"weather": weather})
            times.append((time.perf_counter() - start) * 1000)
        client.close()
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for times in pool.map(one_client, range(clients)) for t in times]
    return len(latencies) / (time.perf_counter() - start), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: export the demo checkpoint)")
    parser.add_argument("--size", type=parse_size, default=(256, 256),
                        help="frame size HxW (default 256x256)")
    parser.add_argument("--clients", default="1,2,4,8",
                        help="concurrent clients, comma-separated (default 1,2,4,8)")
    parser.add_argument("--requests", type=int, default=12,
                        help="requests per client per round (default 12)")
    parser.add_argument("--backend", default="auto", help="runtime backend (default auto)")
    parser.add_argument("--instances", type=int, default=1,
                        help="model instances (default 1)")
    parser.add_argument("--queue-delay-us", type=int, default=2000,
                        help="dynamic batcher's queue delay (default 2000)")
    parser.add_argument("-o", "--output", help="write the figures as a JSON record here")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(args.bundle) if args.bundle else prepared_bundle(Path(tmp))[0]
        frame = np.random.default_rng(0).integers(0, 256, (*args.size, 3), dtype=np.uint8)
        weather = Bundle.open(bundle).weathers[0]
        rows = []
        with Restorer(bundle, backend=args.backend) as restorer:
            restorer.restore(frame, weather)  # warm-up
            times = []
            for _ in range(args.requests * 2):
                start = time.perf_counter()
                restorer.restore(frame, weather)
                times.append((time.perf_counter() - start) * 1000)
            summary = latency_summary(times)
            rows.append({"mode": f"Restorer in process ({restorer.backend_name}, "
                                 f"{restorer.precision})", "clients": 1,
                         "frames_per_s": summary["fps"], "p50_ms": summary["p50_ms"],
                         "p99_ms": summary["p99_ms"]})
        for dynamic in (False, True):
            batching = Batching(max_batch=8, dynamic=dynamic, queue_delay_us=args.queue_delay_us)
            settings = ServeSettings(backend=args.backend, batching=batching,
                                     instances=args.instances)
            endpoints = Endpoints(http_port=free_port(), grpc_port=free_port(),
                                  metrics_port=free_port())
            with serve_bundle(bundle, settings, endpoints) as server:
                client_round(endpoints.http_url, frame, weather, 1, 2)  # warm-up
                mode = (f"serve, dynamic batching {'on' if dynamic else 'off'} "
                        f"({'; '.join(server.loaded)})")
                for count in clients:
                    rate, latencies = client_round(endpoints.http_url, frame, weather, count,
                                                   args.requests)
                    summary = latency_summary(latencies)
                    rows.append({"mode": mode, "clients": count, "frames_per_s": rate,
                                 "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"]})
                    print(f"  {mode}: {count} clients {rate:.1f} frames/s", flush=True)

    flags = ", ".join(notable_cpu_flags()) or "none of avx2/avx512/amx"
    print(f"\n{cpu_model()} ({flags}); {format_size(args.size)} frames, weather {weather}, "
          f"{args.requests} requests per client, {args.instances} instance(s)\n")
    print("| mode | clients | frames/s | p50 ms | p99 ms | vs Restorer |")
    print("|---|---|---|---|---|---|")
    base = rows[0]["frames_per_s"]
    for row in rows:
        print(f"| {row['mode']} | {row['clients']} | {row['frames_per_s']:.1f} | "
              f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
              f"{row['frames_per_s'] / base:.2f}x |")
    if args.output:
        write_record(args.output, "bench_serve",
                     {"size": format_size(args.size), "weather": weather,
                      "requests": args.requests, "instances": args.instances, "rows": rows})


if __name__ == "__main__":
    main()
