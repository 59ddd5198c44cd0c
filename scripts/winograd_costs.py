"""Direct conv vs Winograd F(m, 3) per 3x3 conv shape, timed side by side in one process.

Run through `scripts/winograd-costs`. For each shape (batch, in channels, out channels, map
side) it builds a one-layer model (3x3 conv, pad 1, bias, relu), compiles it once per variant
(`direct`: Winograd off; `F2`, `F4`, `F6`: every conv forced to that tile) with verification
against onnxruntime on, and prints process-CPU-time p50s and each variant's ratio to the
direct conv: the data behind `tvmflow.winograd.choose_tile`. `--model M.onnx` instead A/Bs a
whole model: every conv direct vs `choose_tile`'s decisions, beside onnxruntime.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tvmflow.compile  # noqa: F401  (compile-capable TVM first)
from tvmflow import winograd
from tvmflow.compile import CompileOptions, compile_model
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.kernel_profile import set_threads
from tvmflow.manifest import read_manifest
from tvmflow.runtime import weight_tensors
from tvmflow.targets import resolve_preset

DEFAULT_SHAPES = "1x64x64x56,1x128x128x28,1x256x256x14,1x512x512x7,1x32x32x56,1x16x16x112"


def conv_model(batch: int, cin: int, cout: int, side: int) -> Any:
    """A 3x3 pad-1 conv + bias + relu over a [batch, cin, side, side] input."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
    b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["y"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, side, side])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, cout, side, side])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def _caller(func: Any, args: list[Any]) -> Callable[[], object]:
    return lambda: func(*args)


def measure(shape: tuple[int, int, int, int], tiles: list[int], rounds: int, scratch: Path) -> str:
    """One line: p50 ms of each variant and its ratio to the direct conv."""
    import onnx

    path = scratch / ("conv_" + "x".join(map(str, shape)) + ".onnx")
    onnx.save(conv_model(*shape), str(path))
    variants = {f"F{t}" if t else "direct": (lambda conv, t=t: t or None) for t in [0, *tiles]}
    p50 = _timed(path, {}, variants, rounds, scratch)
    cells = " ".join(f"{k} {v * 1e3:.3f} ms ({v / p50['direct']:.2f}x)" for k, v in p50.items())
    return f"N={shape[0]} C={shape[1]} K={shape[2]} {shape[3]}x{shape[3]}: {cells}"


def measure_model(
    path: Path, shapes: dict[str, tuple[int, ...]], rounds: int, scratch: Path
) -> str:
    """A whole model with `choose_tile`'s decisions vs all convs direct, beside onnxruntime."""
    variants = {"direct": lambda conv: None, "winograd": winograd.choose_tile}
    p50 = _timed(path, shapes, variants, rounds, scratch, onnxruntime=True)
    ort = p50["onnxruntime"]
    return (
        f"{path.stem} {shapes}: CPU p50 ms direct {p50['direct'] * 1e3:.2f} winograd "
        f"{p50['winograd'] * 1e3:.2f} onnxruntime {ort * 1e3:.2f} | direct/onnxruntime "
        f"{p50['direct'] / ort:.2f}x winograd/onnxruntime {p50['winograd'] / ort:.2f}x "
        f"winograd/direct {p50['winograd'] / p50['direct']:.2f}x"
    )


def _timed(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    variants: dict[str, Callable[[Any], int | None]],
    rounds: int,
    scratch: Path,
    onnxruntime: bool = False,
) -> dict[str, float]:
    """Compile `path` once per `choose_tile` variant (verified), then p50 process CPU time of
    each (and of onnxruntime), all in interleaved rounds."""
    import numpy as np
    import tvm
    from tvm import relax

    from tvmflow.engines import onnxruntime_session

    model = load_onnx(path, shapes)
    preset = resolve_preset("x86")
    chosen = winograd.choose_tile
    runs: dict[str, Callable[[], object]] = {}
    feeds = random_inputs(model.inputs, seed=0)
    try:
        for label, choose in variants.items():
            winograd.choose_tile = choose  # type: ignore[assignment]
            out = scratch / f"{path.stem}_{label}"  # a fresh path: dlopen caches by path
            directory = compile_model(model, preset, out, CompileOptions()).directory
            vm = relax.VirtualMachine(
                tvm.runtime.load_module(str(directory / "model.so")), tvm.cpu(0)
            )
            tensors = [
                tvm.runtime.tensor(np.asarray(feeds[i.name]), tvm.cpu(0)) for i in model.inputs
            ]
            tensors += weight_tensors(directory, read_manifest(directory), tvm.cpu(0))
            runs[label] = _caller(vm["main"], tensors)
    finally:
        winograd.choose_tile = chosen
    if onnxruntime:
        session = onnxruntime_session(path, 1)
        runs["onnxruntime"] = lambda: session.run(None, dict(feeds))
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        run()
    for _ in range(rounds):
        for key, run in runs.items():
            for _ in range(5):
                start = time.process_time()
                run()
                cpu[key].append(time.process_time() - start)
    return {k: statistics.median(v) for k, v in cpu.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/winograd-costs", description=__doc__)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="NxCxKxSIDE,...")
    parser.add_argument("--tiles", default="2,4,6", help="Winograd output tile sizes m")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--model", type=Path, help="A/B a whole model instead (.onnx)")
    parser.add_argument("--input-shape", action="append", default=[], help="NAME=D1,D2,...")
    args = parser.parse_args(argv)
    set_threads(1)
    scratch = Path(tempfile.mkdtemp(prefix="tvmflow-winograd-costs-"))
    if args.model:
        shapes = {
            name: tuple(int(d) for d in dims.split(","))
            for name, _, dims in (text.partition("=") for text in args.input_shape)
        }
        print(measure_model(args.model, shapes, args.rounds, scratch), flush=True)
        return 0
    tiles = [int(t) for t in args.tiles.split(",")]
    for text in args.shapes.split(","):
        n, c, k, side = (int(d) for d in text.split("x"))
        print(measure((n, c, k, side), tiles, args.rounds, scratch), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
