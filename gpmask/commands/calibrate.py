"""Add fp16 or int8 (Q/DQ) graphs to a bundle, measured against fp32 on held-out frames.

fp16: weights and compute in half precision, reductions and normalisations in fp32;
inputs and outputs stay float32 unless --fp16-io.
int8: explicit symmetric Q/DQ (what TensorRT 10/11 builds strongly typed), each
weather calibrated on frames of its own weather, layers kept in fp32 until the PSNR
drop on held-out frames fits --max-psnr-drop. int8-cpu: the same with uint8
activations, ONNX Runtime's fast path on x86 CPUs. int8-openvino: uint8 activations on
the graph shaped for OpenVINO's CPU plugin (the default CPU backend). Weights are 7-bit
in every int8 scheme. Calibration statistics are cached in BUNDLE/calibration/; the
report goes to BUNDLE/reports/calibration.{json,md}.

examples:
  gpmask calibrate bundle/ --precision fp16
  gpmask calibrate bundle/ --precision int8 --synthetic 64 --method percentile
  gpmask calibrate bundle/ --precision int8 --data frames/   # frames/rain/*.png, ...
  gpmask calibrate bundle/ --precision int8-openvino          # for gpmask run on a CPU
"""

from __future__ import annotations

import argparse
import sys

from gpmask.commands.options import add_no_progress, path_argument
from gpmask.sizes import format_size, size_argument


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.calibration.int8 import METHODS
    from gpmask.precision import CALIBRATED

    defaults = _defaults()
    parser.add_argument("bundle", type=path_argument, help="bundle folder (from gpmask export)")
    parser.add_argument("--precision", required=True, choices=CALIBRATED,
                        help=f"the graphs to add: {', '.join(CALIBRATED)} (required)")
    parser.add_argument("--fp16-io", action="store_true",
                        help="fp16: make graph inputs and outputs float16 too (default "
                             "float32)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=path_argument, metavar="DIR",
                        help="calibration images, one subfolder per weather (DIR/rain/...) "
                             "(default: synthetic frames)")
    source.add_argument("--synthetic", metavar="N", type=int, default=defaults.synthetic,
                        help="calibrate on N synthetic frames per weather "
                             f"(default {defaults.synthetic})")
    parser.add_argument("--method", choices=tuple(METHODS), default=defaults.method,
                        help=f"int8 calibration method (default {defaults.method})")
    parser.add_argument("--max-psnr-drop", type=float, default=defaults.max_psnr_drop,
                        metavar="DB", help="int8 quality budget on held-out frames "
                        f"(default {defaults.max_psnr_drop} dB)")
    parser.add_argument("--calibration-size", type=size_argument,
                        default=defaults.calibration_size, metavar="HxW",
                        help="size of the calibration crops "
                             f"(default {format_size(defaults.calibration_size)})")
    parser.add_argument("--eval-size", type=size_argument, default=defaults.eval_size,
                        metavar="HxW", help="size of the held-out evaluation crops "
                        f"(default {format_size(defaults.eval_size)})")
    add_no_progress(parser)


def _defaults():
    from gpmask.calibration.options import CalibrationOptions

    return CalibrationOptions()


def run(args: argparse.Namespace) -> int:
    from gpmask.calibration.options import CalibrationOptions
    from gpmask.calibration.pipeline import calibrate_bundle

    options = CalibrationOptions(
        data_dir=args.data, synthetic=args.synthetic, method=args.method,
        max_psnr_drop=args.max_psnr_drop, calibration_size=args.calibration_size,
        eval_size=args.eval_size, fp16_io=args.fp16_io, progress=not args.no_progress,
    )
    results = calibrate_bundle(args.bundle, args.precision, options)
    for weather, result in results.items():
        scores = result.scores
        line = (f"{weather:<10} {args.precision:<8} drop {scores.drop:+.3f} dB  "
                f"PSNR vs fp32 {scores.psnr_vs_fp32:.2f} dB")
        if result.budget is not None and result.calibration is not None:
            line += (f"  layers in fp32 {len(result.budget.excluded)}/"
                     f"{result.budget.candidates}  calibration "
                     f"{'computed' if result.calibrated_now else 'cached'}")
        if not result.fits:
            line += f"  DOES NOT FIT the {result.max_psnr_drop} dB budget"
        print(line)
    print(f"report: {args.bundle}/reports/calibration.md", file=sys.stderr)
    return 0
