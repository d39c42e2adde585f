"""The CPU's instruction-throughput limit per precision, measured by a dot-product loop.

A network's work rate means little without the most the cores can do at its
precision. That limit is set by the one vector instruction an engine's convolution
kernels spend their time in, and how many of them the cores retire per second:

==========  ==================================  =====================  ==============
precision   instruction (best the CPU has)      multiply-accumulates   ops / instr.
==========  ==================================  =====================  ==============
fp32        ``vfmadd231ps`` zmm (AVX-512F)      16 lanes               32
            ``vfmadd231ps`` ymm (FMA3/AVX2)     8 lanes                16
bf16        ``tdpbf16ps`` (AMX-BF16 tiles)      16 x 16 x 32 bf16      16,384
            ``vdpbf16ps`` zmm (AVX-512 BF16)    16 lanes x 2 pairs     64
int8        ``tdpbusd`` (AMX-INT8 tiles)        16 x 16 x 64 u8*s8     32,768
            ``vpdpbusd`` zmm (AVX-512 VNNI)     16 lanes x 4 u8*s8     128
            ``vpdpbusd`` ymm (AVX-VNNI)         8 lanes x 4 u8*s8      64
            ``vpmaddubsw`` + ``vpmaddwd`` +     32 u8*s8 per three     64 per three
            ``vpaddd`` ymm (AVX2, no VNNI)      instructions
==========  ==================================  =====================  ==============

(an op is a multiply or an add: one multiply-accumulate is two ops, as in GFLOP/s.)
The AVX2 int8 sequence is what OpenVINO's and ONNX Runtime's int8 kernels run on a
CPU without VNNI. On a CPU with AMX, oneDNN's bf16 and int8 convolutions run on the
tiles, so there the tile instructions are the limit (a loop of four independent
accumulator tiles, after the tile configuration and Linux's permission to use tile
data), and no engine can pass it.

Why a loop of the bare instruction rather than a matrix product: the loop keeps its
operands in registers, with twelve (AVX2 int8: six) independent accumulators so that
the next instruction never waits for the previous one's result (latency 4-5 cycles, two
issued per cycle), and touches no memory. What it measures is the issue rate of the
execution ports at the clock the cores hold under that load, on ``threads`` threads
(one per physical core, the count the engines use): the ceiling no kernel can pass.
A matrix product also measures the library's blocking, caches and memory bandwidth,
which is what the fraction of the limit is meant to reveal about the engines.

The loop is a tiny C program with inline assembly, built at benchmark time with the
system C compiler into a temporary folder and run in a subprocess. Each thread times
itself in its own CPU time (``CLOCK_THREAD_CPUTIME_ID``) and the rates add up, so time
the scheduler gives to other processes on a shared machine does not count against the
cores; the best of three runs is kept. Where there is no compiler,
no /proc/cpuinfo, or the CPU lacks every instruction of a precision, that precision's
limit is reported as skipped with the reason.
"""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpmask.host import cpu_flags


@dataclass(frozen=True)
class Kernel:
    """One instruction loop: the CPU flag it needs, compiler flags, ops per iteration.

    ``clear`` zeroes the loop's registers before it (default: the vector registers);
    ``after`` runs once after it; ``thread_setup`` and ``process_setup`` are C statements
    run in each thread before the loop and once in ``main`` (AMX: the tile
    configuration, and the kernel's permission to use tile data).
    """

    precision: str
    instruction: str
    cpu_flag: str
    compiler_flags: tuple[str, ...]
    ops_per_iteration: int
    body: str
    clear: str | None = None
    after: str = ""
    thread_setup: str = ""
    process_setup: str = ""


def _unrolled(template: str, count: int) -> str:
    return "".join(template.format(i=i) for i in range(count))


# Twelve accumulators (ymm/zmm 0-11), sources in register 12 and 13.
_FP32_ZMM = Kernel("fp32", "vfmadd231ps zmm", "avx512f", ("-mavx512f",), 12 * 32,
                   _unrolled('"vfmadd231ps %%zmm12, %%zmm13, %%zmm{i}\\n"', 12))
_FP32_YMM = Kernel("fp32", "vfmadd231ps ymm", "fma", ("-mavx2", "-mfma"), 12 * 16,
                   _unrolled('"vfmadd231ps %%ymm12, %%ymm13, %%ymm{i}\\n"', 12))
_BF16_ZMM = Kernel("bf16", "vdpbf16ps zmm", "avx512_bf16", ("-mavx512f", "-mavx512bf16"),
                   12 * 64, _unrolled('"vdpbf16ps %%zmm12, %%zmm13, %%zmm{i}\\n"', 12))
_INT8_ZMM = Kernel("int8", "vpdpbusd zmm", "avx512_vnni", ("-mavx512f", "-mavx512vnni"),
                   12 * 128, _unrolled('"vpdpbusd %%zmm12, %%zmm13, %%zmm{i}\\n"', 12))
_INT8_AVX_VNNI = Kernel("int8", "vpdpbusd ymm (AVX-VNNI)", "avx_vnni",
                        ("-mavx2", "-mavxvnni"), 12 * 64,
                        _unrolled('"{{vex}} vpdpbusd %%ymm12, %%ymm13, %%ymm{i}\\n"', 12))
# Six chains: temporaries ymm6-11, accumulators ymm0-5, ones (int16) in ymm14.
_INT8_AVX2 = Kernel("int8", "vpmaddubsw+vpmaddwd+vpaddd ymm", "avx2", ("-mavx2",), 6 * 64,
                    "".join(f'"vpmaddubsw %%ymm12, %%ymm13, %%ymm{i + 6}\\n"'
                            f'"vpmaddwd %%ymm14, %%ymm{i + 6}, %%ymm{i + 6}\\n"'
                            f'"vpaddd %%ymm{i + 6}, %%ymm{i}, %%ymm{i}\\n"' for i in range(6)))

# AMX: four 16x16 accumulator tiles (tmm0-3), each fed by one of two A tiles (tmm4-5) and
# one of two B tiles (tmm6-7), 16 rows of 64 bytes each. One tdpbf16ps multiplies
# 16 x 16 x 32 bf16 pairs (8,192 multiply-accumulates), one tdpbusd 16 x 16 x 64 u8*s8.
_AMX_THREAD_SETUP = r"""
    struct { unsigned char palette, start_row, reserved[14]; unsigned short colsb[16];
             unsigned char rows[16]; } __attribute__((packed, aligned(64))) cfg = {0};
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    __asm__ volatile("ldtilecfg %0" :: "m"(cfg));
"""
# Linux hands out AMX tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
_AMX_PROCESS_SETUP = r"""
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { fprintf(stderr, "AMX tile data not permitted "
                                                       "by the kernel\n"); return 1; }
"""
_AMX_CLEAR = "".join(f'"tilezero %%tmm{i}\\n"' for i in range(8))


def _amx(precision: str, instruction: str, flag: str, macs: int) -> Kernel:
    body = "".join(f'"{instruction} %%tmm{6 + i % 2}, %%tmm{4 + i // 2}, %%tmm{i}\\n"'
                   for i in range(4))
    return Kernel(precision, f"{instruction} (AMX tiles)", flag,
                  ("-mamx-tile", f"-mamx-{precision}"), 4 * 2 * macs, body, clear=_AMX_CLEAR,
                  after='"tilerelease\\n"', thread_setup=_AMX_THREAD_SETUP,
                  process_setup=_AMX_PROCESS_SETUP)


_BF16_AMX = _amx("bf16", "tdpbf16ps", "amx_bf16", 16 * 16 * 32)
_INT8_AMX = _amx("int8", "tdpbusd", "amx_int8", 16 * 16 * 64)

#: Per precision, the kernels to try, best first: where a CPU has AMX, its tile
#: instructions are the limit a bf16 or int8 convolution can reach, not a vector loop.
KERNELS = {"fp32": (_FP32_ZMM, _FP32_YMM), "bf16": (_BF16_AMX, _BF16_ZMM),
           "int8": (_INT8_AMX, _INT8_ZMM, _INT8_AVX_VNNI, _INT8_AVX2)}

_PROGRAM = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long iterations;

/* Runs the loop; returns the thread's own CPU seconds through *result. */
static void *loop(void *result) {
    long n = iterations;
    struct timespec start, end;
    THREAD_SETUP
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    __asm__ volatile(
        "vpxor %%xmm0, %%xmm0, %%xmm0\n"
        BODY_CLEAR
        "1:\n"
        BODY
        "dec %0\n"
        "jnz 1b\n"
        BODY_AFTER
        : "+r"(n)
        :
        : "cc", CLOBBERS);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
    *(double *)result = (end.tv_sec - start.tv_sec) + 1e-9 * (end.tv_nsec - start.tv_nsec);
    return NULL;
}

/* Prints the summed rate of the threads: iterations per CPU second of each, added up. */
int main(int argc, char **argv) {
    int threads = atoi(argv[1]);
    iterations = atol(argv[2]);
    PROCESS_SETUP
    pthread_t ids[256];
    double seconds[256];
    for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, loop, &seconds[i]);
    double rate = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        rate += iterations / seconds[i];
    }
    printf("%.3f\n", rate);
    return 0;
}
"""


@dataclass(frozen=True)
class InstructionLimit:
    """One precision's limit, or why it was not measured.

    Attributes:
        precision: ``fp32``, ``bf16`` or ``int8``.
        instruction: the loop's instruction(s), e.g. ``vpdpbusd zmm``; None when skipped.
        gops: billions of ops (multiplies and adds) per second on ``threads`` threads.
        threads: threads the loop ran on.
        reason: why it was skipped, else None.
    """

    precision: str
    instruction: str | None
    gops: float | None
    threads: int
    reason: str | None = None

    def to_dict(self) -> dict:
        return {"precision": self.precision, "instruction": self.instruction,
                "gops": self.gops, "threads": self.threads, "reason": self.reason}


def _source(kernel: Kernel) -> str:
    if kernel.clear is not None:  # tile registers: gcc takes no clobbers for them
        clear, registers = kernel.clear, ["memory", "xmm0"]
    else:
        wide = "zmm" if "zmm" in kernel.instruction else "ymm"
        registers = [f"{wide}{i}" for i in range(15)]
        clear = "".join(f'"vpxor %%xmm{i}, %%xmm{i}, %%xmm{i}\\n"' for i in range(1, 15))
    if kernel is _INT8_AVX2:  # int16 ones for vpmaddwd, so it only widens and adds pairs
        clear += '"vpcmpeqw %%ymm14, %%ymm14, %%ymm14\\n" "vpsrlw $15, %%ymm14, %%ymm14\\n"'
    return (_PROGRAM.replace("BODY_CLEAR", clear).replace("BODY_AFTER", kernel.after)
            .replace("BODY", kernel.body).replace("THREAD_SETUP", kernel.thread_setup)
            .replace("PROCESS_SETUP", kernel.process_setup)
            .replace("CLOBBERS", ", ".join(f'"{r}"' for r in registers)))


def _run(kernel: Kernel, threads: int, folder: Path, compiler: str, seconds: float) -> float:
    """Best GOP/s of a few runs of ``kernel``'s loop on ``threads`` threads."""
    source, binary = folder / f"{kernel.cpu_flag}.c", folder / kernel.cpu_flag
    source.write_text(_source(kernel))
    subprocess.run([compiler, "-O1", "-pthread", *kernel.compiler_flags, str(source), "-o",
                    str(binary)], check=True, capture_output=True, text=True)

    def rate(iterations: int) -> float:  # loop iterations per second, all threads
        return float(subprocess.run([str(binary), str(threads), str(iterations)], check=True,
                                    capture_output=True, text=True).stdout)

    iterations = max(100_000, int(rate(100_000) / threads * seconds))
    return kernel.ops_per_iteration * max(rate(iterations) for _ in range(3)) / 1e9


@functools.cache
def instruction_limits(threads: int, seconds: float = 0.2) -> dict[str, InstructionLimit]:
    """:func:`measure_instruction_limits`, measured once per process."""
    return measure_instruction_limits(threads, seconds)


def best_limits(*measured: dict[str, InstructionLimit]) -> dict[str, InstructionLimit]:
    """Per precision, the highest of several measurements of the limits.

    A virtual machine's CPUs may share one physical core at one moment and not the next,
    which halves a loop's rate; a shared or throttled machine only ever runs a loop
    slower, so the highest rate seen is the closest to the limit.
    """
    return {precision: max((m[precision] for m in measured),
                           key=lambda limit: limit.gops or 0.0)
            for precision in measured[0]}


def measure_instruction_limits(threads: int, seconds: float = 0.2
                               ) -> dict[str, InstructionLimit]:
    """The fp32, bf16 and int8 limits of this CPU on ``threads`` threads, measured now.

    ``seconds`` is about how long each timed run of a loop lasts.
    """
    flags = cpu_flags()
    compiler = shutil.which("cc") or shutil.which("gcc")
    reason = None
    if platform.machine().lower() not in ("x86_64", "amd64"):
        reason = f"the instruction loops are x86 assembly; this CPU is {platform.machine()}"
    elif flags is None:
        reason = "no /proc/cpuinfo to read the CPU's instruction set from"
    elif compiler is None:
        reason = "no C compiler (cc or gcc) to build the instruction loop"
    limits = {}
    with tempfile.TemporaryDirectory(prefix="gpmask-limit-") as folder:
        for precision, kernels in KERNELS.items():
            if reason:
                limits[precision] = InstructionLimit(precision, None, None, threads, reason)
                continue
            kernel = next((k for k in kernels if k.cpu_flag in flags), None)
            if kernel is None:
                needs = " or ".join(k.cpu_flag for k in kernels)
                limits[precision] = InstructionLimit(
                    precision, None, None, threads, f"this CPU lacks {needs}")
                continue
            try:
                gops = _run(kernel, threads, Path(folder), compiler, seconds)
            except (subprocess.CalledProcessError, ValueError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                limits[precision] = InstructionLimit(
                    precision, kernel.instruction, None, threads,
                    f"the {kernel.instruction} loop did not build or run: "
                    f"{detail.strip().splitlines()[-1] if detail.strip() else exc}")
                continue
            limits[precision] = InstructionLimit(precision, kernel.instruction, gops, threads)
    return limits
