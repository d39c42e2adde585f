"""Options ``gpmask serve`` and ``gpmask export-triton`` share: batching, instances, and
what a request that names no weather (or a ``clear`` frame) gets."""

from __future__ import annotations

import argparse


def add_batching(parser: argparse.ArgumentParser) -> None:
    """``--max-batch``, ``--queue-delay-us``, ``--no-dynamic-batching``, ``--instances``."""
    from gpmask.serve.config import Batching

    defaults = Batching()
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch, metavar="N",
                        help=f"most frames one model execution takes (default "
                             f"{defaults.max_batch})")
    parser.add_argument("--queue-delay-us", type=int, default=defaults.queue_delay_us,
                        metavar="US",
                        help="how long Triton's dynamic batcher may hold a request to fill a "
                             f"batch, in microseconds (default {defaults.queue_delay_us})")
    parser.add_argument("--no-dynamic-batching", action="store_true",
                        help="run each request on its own (default: Triton merges "
                             "concurrent requests into batches)")
    parser.add_argument("--instances", type=int, default=1, metavar="N",
                        help="model instances, each with every weather loaded (default 1)")


def batching(args: argparse.Namespace):
    """The :class:`~gpmask.serve.config.Batching` the options give."""
    from gpmask.serve.config import Batching

    return Batching(args.max_batch, not args.no_dynamic_batching, args.queue_delay_us)


def add_routing(parser: argparse.ArgumentParser) -> None:
    """``--weather`` (the default of a request that names none) and ``--clear``."""
    parser.add_argument(
        "--weather",
        help="weather of a request that names none: a weather of the bundle, 'common', "
             "'clear' or 'auto' (the bundle's router, each frame on its own) (default: auto "
             "when the bundle has a router, else the bundle's default weather)")
    parser.add_argument("--clear", default="pass", choices=["pass", "common"],
                        help="frames routed to 'clear': passed through, or restored with the "
                             "common graph (default pass)")


def routing(args: argparse.Namespace) -> tuple[str | None, str]:
    """(weather, clear) as :class:`~gpmask.serve.triton.ServeSettings` takes them."""
    return args.weather, args.clear
