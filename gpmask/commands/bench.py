"""Benchmark a bundle: latency, cold start, memory, switching, work rate and quality per backend.

Runs every backend available here (torch eager as the reference, OpenVINO's default
compile as a second one, OpenVINO, ONNX Runtime on the CPU and CUDA, TensorRT), each at
the precision `--precision auto` takes there (or the precisions named, or all of them),
at every frame size, batch 1, on the same synthetic-weather frames, and writes
bench.json, bench.md and PNG plots into DIR.
Each backend and precision is compared with torch eager as a latency ratio and with
the instruction-throughput limit of its precision; a backend or precision the bundle
or machine lacks is listed with the reason.

examples:
  gpmask bench bundle/                                 # every backend at its auto precision
  gpmask bench bundle/ --precisions all                # every backend x every precision
  gpmask bench bundle/ --backends torch,onnxruntime-cpu --sizes 256x256,720x1280
  gpmask bench bundle/ --precisions fp32,int8-cpu --iters 50 -o bench-int8/
  gpmask bench bundle/ --checkpoint model.gpmask.safetensors   # torch reference
  gpmask bench bundle/ --backends torch,torch-compile,openvino --precisions fp32,bf16,int8
"""

from __future__ import annotations

import argparse

from gpmask.commands.options import add_no_progress, path_argument
from gpmask.sizes import format_size, parse_size, sizes_argument


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give a comma-separated "
                                         f"list")
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.bench.runner import DEFAULT_BACKENDS, DEFAULT_PRECISIONS, DEFAULT_SIZES
    from gpmask.bench.targets import BENCH_BACKENDS
    from gpmask.precision import NAMES

    parser.add_argument("bundle", type=path_argument, help="bundle folder (from gpmask export)")
    parser.add_argument("--backends", type=_names, default=list(DEFAULT_BACKENDS),
                        metavar="LIST", help=f"from {','.join(BENCH_BACKENDS)}; default "
                                             f"{','.join(DEFAULT_BACKENDS)}")
    parser.add_argument("--precisions", type=_names, default=list(DEFAULT_PRECISIONS),
                        metavar="LIST", help=f"from auto,{','.join(NAMES)} or all (auto: "
                                             "each backend at the precision --precision auto "
                                             "takes there); default "
                                             f"{','.join(DEFAULT_PRECISIONS)}")
    parser.add_argument("--sizes", type=sizes_argument, metavar="HxW,...",
                        default=[parse_size(size) for size in DEFAULT_SIZES],
                        help=f"frame sizes (default {','.join(DEFAULT_SIZES)})")
    parser.add_argument("--iters", type=int, default=20, help="timed runs per size (default 20)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed runs before them (default 3)")
    parser.add_argument("--checkpoint", type=path_argument, metavar="FILE",
                        help="the checkpoint the bundle was exported from, for torch eager "
                             "(default: the shipped demo when the manifest records it)")
    parser.add_argument("-o", "--output", type=path_argument, default="bench-report", metavar="DIR",
                        help="folder for bench.json, bench.md and plots (default bench-report)")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from gpmask.bench import run_benchmark, write_report
    from gpmask.bench.report_files import check_report_folder, markdown
    from gpmask.fileio import check_folder_output, check_outputs

    check_outputs([args.output], [args.bundle, args.checkpoint])
    check_folder_output(args.output)
    check_report_folder(args.output)

    report = run_benchmark(args.bundle, backends=args.backends, precisions=args.precisions,
                           sizes=[format_size(size) for size in args.sizes], iters=args.iters,
                           warmup=args.warmup, checkpoint=args.checkpoint,
                           progress=not args.no_progress)
    paths = write_report(report, args.output)
    print(markdown(report), end="")
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0
