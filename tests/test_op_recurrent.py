"""LSTM, GRU and RNN converters against onnxruntime on generated one-node models.

Each case compiles through tvmflow's backend (the normal compile path, host preset). Cases
cover every direction, `sequence_lens`, initial states, all outputs, bias, clip, non-default
activations with alpha/beta, LSTM peepholes and `input_forget`, GRU `linear_before_reset`, and
opsets 7/14/22. onnxruntime 1.32 refuses `layout=1`; those cases use onnx's reference evaluator.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model

T, B, IN, H = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
OUTPUTS = {"LSTM": ["Y", "Y_h", "Y_c"], "GRU": ["Y", "Y_h"], "RNN": ["Y", "Y_h"]}


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def recurrent_model(
    op: str,
    opset: int,
    directions: int = 1,
    bias: bool = False,
    seq_lens: bool = False,
    initial: bool = False,
    peepholes: bool = False,
    layout: int = 0,
    seed: int = 0,
    hidden: int = H,
    steps: int = T,
    batch: int = B,
    **attrs: object,
) -> tuple:
    rng = np.random.default_rng(seed)
    g = GATES[op]

    def rand(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, shape).astype(np.float32)

    x = rand(steps, batch, IN) if layout == 0 else rand(batch, steps, IN)
    state_shape = (directions, batch, hidden) if layout == 0 else (batch, directions, hidden)
    inputs: dict[str, np.ndarray | None] = {
        "X": x,
        "W": rand(directions, g * hidden, IN),
        "R": rand(directions, g * hidden, hidden),
        "B": rand(directions, 2 * g * hidden) if bias else None,
        "sequence_lens": np.array([steps, 2, 4, 1, 3, steps][:batch], np.int32)
        if seq_lens
        else None,
        "initial_h": rand(*state_shape) if initial else None,
    }
    if op == "LSTM":
        inputs["initial_c"] = rand(*state_shape) if initial else None
        inputs["P"] = rand(directions, 3 * hidden) if peepholes else None
    if layout:
        attrs["layout"] = layout
    return one_node_model(op, inputs, OUTPUTS[op], opset, hidden_size=hidden, **attrs)


CASES = [
    ("LSTM", 7, {}),
    (
        "LSTM",
        14,
        dict(
            directions=2,
            direction="bidirectional",
            bias=True,
            seq_lens=True,
            initial=True,
            peepholes=True,
        ),
    ),
    ("LSTM", 22, dict(direction="reverse", bias=True, clip=0.5, input_forget=1)),
    (
        "LSTM",
        22,
        dict(
            bias=True,
            activations=["HardSigmoid", "LeakyRelu", "ScaledTanh"],
            activation_alpha=[0.3, 0.1, 0.8],
            activation_beta=[0.4, 1.2],
        ),
    ),
    (
        "GRU",
        14,
        dict(
            directions=2,
            direction="bidirectional",
            bias=True,
            seq_lens=True,
            initial=True,
            linear_before_reset=1,
        ),
    ),
    ("GRU", 7, dict(direction="reverse", bias=True, seq_lens=True, clip=0.7)),
    (
        "GRU",
        22,
        dict(bias=True, activations=["Sigmoid", "Softsign"], initial=True),
    ),
    (
        "RNN",
        14,
        dict(
            directions=2,
            direction="bidirectional",
            bias=True,
            seq_lens=True,
            initial=True,
            activations=["Relu", "Affine"],
            activation_alpha=[0.5],
            activation_beta=[0.1],
        ),
    ),
    ("RNN", 7, dict(bias=True, activations=["Elu"], clip=0.9)),
    # Sizes the kernel's register tiles (64 columns) and vectors (16 units) do not divide:
    # full and partial tiles, GRU's two-part recurrence matmul, a scalar tail of units.
    (
        "LSTM",
        14,
        dict(hidden=20, directions=2, direction="bidirectional", bias=True, seq_lens=True),
    ),
    ("GRU", 14, dict(hidden=40, bias=True, initial=True)),
    # 6 rows: a block of 4 sharing each weight load (AVX-512 targets), then a block of 2
    ("GRU", 14, dict(hidden=40, batch=6, bias=True, seq_lens=True, initial=True)),
    ("GRU", 14, dict(hidden=40, bias=True, linear_before_reset=1)),
]


@pytest.mark.parametrize(("op", "opset", "attrs"), CASES, ids=lambda v: str(v)[:12])
def test_recurrent_matches_onnxruntime(op: str, opset: int, attrs: dict) -> None:
    model, feeds = recurrent_model(op, opset, **attrs)
    assert_matches(model, feeds)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_batch_first_layout_matches_reference(op: str) -> None:
    """layout=1 (batch first, opset 14+): onnxruntime refuses it, onnx's reference does not."""
    model, feeds = recurrent_model(
        op, 14, layout=1, directions=2, direction="bidirectional", bias=True, initial=True
    )
    assert_matches(model, feeds, use_ort=False)


def test_unsupported_listing_sees_recurrent_converters(tmp_path: Path) -> None:
    """The frontend's unsupported-operator check counts tvmflow's converters as supported."""
    import onnx

    from tvmflow.frontend import load_onnx

    model, _ = recurrent_model("LSTM", 18)
    path = tmp_path / "lstm.onnx"
    onnx.save(model, path)
    assert load_onnx(path).opset == 18


def test_kernels_do_not_grow_with_the_sequence() -> None:
    """The time loop is one kernel: 5 and 60 steps lower to the same number of kernels and
    Relax bindings (unrolled steps made plcmos-v2 take 820 s to compile)."""
    import tvm

    from tvmflow.lowering import fuse
    from tvmflow.targets import resolve_preset

    target = tvm.target.Target(resolve_preset("x86").target)
    sizes = []
    for steps in (5, 60):
        module = fuse(_relax(recurrent_model("LSTM", 14, steps=steps, bias=True)[0]), target)
        kernels = [f for _, f in module.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
        bindings = sum(len(b.bindings) for b in module["main"].body.blocks)
        sizes.append((len(kernels), bindings))
    assert sizes[0] == sizes[1]


def test_gpu_targets_run_the_kernel_on_one_gpu_thread() -> None:
    """The CPU-written kernel, unbound, would build as host code reading device memory."""
    import tvm

    from tvmflow.lowering import fuse
    from tvmflow.ops.recurrent_kernel import KERNEL_ATTR
    from tvmflow.targets import resolve_preset

    target = tvm.target.Target(resolve_preset("cuda-sm90").target)
    module = fuse(_relax(recurrent_model("GRU", 14)[0]), target)
    kernels = [
        f
        for _, f in module.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and KERNEL_ATTR in f.attrs
    ]
    assert len(kernels) == 1
    outer = kernels[0].body
    assert outer.kind == tvm.tirx.ForKind.THREAD_BINDING
    assert outer.body.kind == tvm.tirx.ForKind.THREAD_BINDING
    assert "T.vectorized" not in str(kernels[0])


def test_tuning_leaves_the_written_kernel_alone(tmp_path: Path) -> None:
    """The recurrent kernel is written scheduled: no tuning task for it, only the input
    projection's matmul."""
    import onnx
    import tvm

    from tvmflow.frontend import load_onnx
    from tvmflow.lowering import tuning_tasks
    from tvmflow.targets import resolve_preset

    path = tmp_path / "gru.onnx"
    onnx.save(recurrent_model("GRU", 14, bias=True)[0], path)
    target = tvm.target.Target(resolve_preset("x86").target)
    names = [t.name for t in tuning_tasks(load_onnx(path), target, "fp32")]
    assert names and not [n for n in names if "sequence" in n]


def _relax(model: Any) -> Any:
    import onnx

    from tvmflow.frontend import load_onnx, to_relax

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, path)
        return to_relax(load_onnx(path))


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_constant_weights_match_onnxruntime(op: str) -> None:
    """Real models' W, R, B, P are initializers: prepared (transposed, packed) at import."""
    from onnx import numpy_helper

    model, feeds = recurrent_model(
        op, 14, hidden=40, directions=2, direction="bidirectional", bias=True, peepholes=True
    )
    weights = [name for name in ("W", "R", "B", "P") if name in feeds]
    model.graph.initializer.extend(numpy_helper.from_array(feeds.pop(n), n) for n in weights)
    kept = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    assert_matches(model, feeds)


@pytest.mark.parametrize(
    ("preset", "rows"), [("x86-avx512", 4), ("x86-avx2", 1), ("cuda-sm90", 1), (None, 1)]
)
def test_batch_rows_per_register_tile_follow_the_target(preset: str | None, rows: int) -> None:
    """4 rows of 64-column accumulators fill half of AVX-512's 32 registers; on AVX2 one row
    is already 8 of 16 (4 spilled); unknown targets and GPUs take 1."""
    import tvm

    from tvmflow.ops.recurrent_kernel import register_rows
    from tvmflow.targets import resolve_preset

    target = None if preset is None else tvm.target.Target(resolve_preset(preset).target)
    assert register_rows(target) == rows
