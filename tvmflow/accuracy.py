"""Accuracy against onnxruntime: the reference every artifact is checked against."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.manifest import OutputAccuracy


@dataclass(frozen=True)
class Tolerance:
    """Pass when max |actual - expected| <= atol + rtol * max |expected| for every output.

    Scaling by the output's magnitude (not per element) keeps near-zero elements, whose
    relative error is meaningless after reordered fp32 sums, from failing a correct build.
    """

    atol: float = 1e-4
    rtol: float = 1e-3

    def __post_init__(self) -> None:
        for name, value in (("atol", self.atol), ("rtol", self.rtol)):
            if not (math.isfinite(value) and value >= 0):
                raise TvmflowError(
                    f"--{name} {value} is not a tolerance: give a finite number >= 0 "
                    f"(default {getattr(Tolerance, name)})"
                )

    def allowed(self, acc: OutputAccuracy, scale: float) -> float:
        """The largest max abs error `acc` may have: plus its allowed quantization steps for
        an output that a DequantizeLinear produces (`quant_allowance`)."""
        return self.atol + self.rtol * scale + (acc.quant_step or 0.0) * acc.quant_steps

    def passes(self, acc: OutputAccuracy, scale: float) -> bool:
        return bool(np.isfinite(acc.max_abs_err)) and acc.max_abs_err <= self.allowed(acc, scale)


# fp16 rounds every activation to 11 significant bits: errors of 1e-3 relative are expected.
FP16_TOLERANCE = Tolerance(atol=1e-2, rtol=1e-2)
# bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per operand); summed over a
# network's layers, errors of 1e-2 of an output's magnitude are expected.
BF16_TOLERANCE = Tolerance(atol=2e-2, rtol=3e-2)
LOW_PRECISION_TOLERANCE = {"fp16": FP16_TOLERANCE, "bf16": BF16_TOLERANCE}


def output_quant_steps(model: Path) -> dict[str, float]:
    """Graph outputs that a DequantizeLinear with one constant scale produces -> that scale.

    Such an output is a requantized integer times its scale. The fp32 value rounded into it
    (a Conv's or Gemm's sum) depends on summation order, so where it lies within an fp32
    ulp of a rounding boundary tvmflow and onnxruntime can round it to neighbouring
    integers, and a step that flips in a hidden layer moves the next layer's sums by a
    fraction of a step, which can cross the next layer's boundaries in turn. Per-axis scales
    are left out: those outputs are held to atol/rtol alone."""
    import onnx

    return _quant_steps(onnx.load(str(model), load_external_data=False).graph)


def _quant_steps(graph: Any) -> dict[str, float]:
    import onnx
    from onnx import numpy_helper

    external = onnx.TensorProto.EXTERNAL
    constants = {t.name: t for t in graph.initializer if t.data_location != external}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in graph.node for out in node.output}
    steps = {}
    for output in graph.output:
        node = producers.get(output.name)
        if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        scale = constants.get(node.input[1])
        if scale is None:
            continue
        value = numpy_helper.to_array(scale)
        if value.size == 1 and np.isfinite(value).all():
            steps[output.name] = abs(float(value.reshape(()).astype(np.float64)))
    return steps


# A QDQ model (Q / DQ at the graph's top level, where quantizers put them): tvmflow runs its
# float ops as int8 kernels (`tvmflow.qdq`). Integer-op models (QLinearConv, MatMulInteger)
# compute exactly what onnxruntime does: no allowance for their float outputs.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def quant_allowance(
    model: Path, feeds: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
) -> dict[str, tuple[float, int]]:
    """Each output `output_quant_steps` finds -> (its step, how many steps it may be off).

    At least one; more where onnxruntime disagrees with itself by more: its default session
    (graph optimizations that run QDQ groups as int8 kernels, as users deploy it) against
    the basic-optimization reference, on the same inputs. Flips compound with depth: a zoo
    ResNet-18 through `quantize_static` spreads 1 step (21 % of its logits), MobileNetV2
    3 steps (64 %). A wrong kernel, scale or zero point moves outputs by far more.

    A float output of a quantized model (a transformer's LayerNorm after int8 matmuls) has
    no step; it may be off by as much as onnxruntime's int8 session is (returned as one
    "step" of that size): a QDQ encoder's int8 session differs from the reference by 0.25
    where tvmflow's int8 kernels differ by 0.11."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    steps = _quant_steps(graph)
    floats = [n for n in expected if n not in steps and _is_float_array(expected[n])]
    qdq = any(node.op_type in QDQ_OPS for node in graph.node)
    names = list(steps) + (floats if qdq else [])
    if not names:
        return {}
    from tvmflow.engines import onnxruntime_session

    try:
        session = onnxruntime_session(exact_integer_model(model))
        fused = dict(zip(names, session.run(names, dict(feeds)), strict=True))
    except Exception:  # onnxruntime's own errors: its optimized session is only a yardstick
        logging.getLogger(__name__).warning("onnxruntime's default session failed: 1 step")
        return {name: (step, 1) for name, step in steps.items()}
    allowance = {}
    for name in names:
        spread = np.abs(np.asarray(fused[name], np.float64) - np.asarray(expected[name]))
        worst = float(spread.max(initial=0.0))
        step = steps.get(name)
        if step is None:
            if math.isfinite(worst) and worst > 0:
                allowance[name] = (worst, 1)
            continue
        most = worst / step if step > 0 else 0.0
        allowance[name] = (step, max(1, round(most)) if math.isfinite(most) else 1)
    return allowance


def _is_float_array(value: np.ndarray) -> bool:
    return np.asarray(value).dtype.kind == "f"


def tolerance_for(
    precision: str, requested: Tolerance, reference: Mapping[str, np.ndarray] | None = None
) -> Tolerance:
    """The tolerance an artifact of this precision is held to: fp16 / bf16 never tighter
    than FP16_TOLERANCE / BF16_TOLERANCE. A model whose `reference` outputs are fp16 (an
    fp16 export) is fp16 whatever the compile's precision: its outputs have 11 significant
    bits, so 1e-3 of their magnitude is one rounding, and onnxruntime rounds after every op
    (mobilenet_v2 in fp16: tvmflow and onnxruntime both ~2 % from the fp32 model, 1.5 %
    from each other)."""
    if any(np.asarray(v).dtype == np.float16 for v in (reference or {}).values()):
        precision = precision if precision in LOW_PRECISION_TOLERANCE else "fp16"
    floor = LOW_PRECISION_TOLERANCE.get(precision)
    if floor is None:
        return requested
    return Tolerance(max(requested.atol, floor.atol), max(requested.rtol, floor.rtol))


# Integer ops whose int8 weight (input `weight`) multiplies uint8 activations, with the
# weight's zero point at input `zero_point`.
_INTEGER_WEIGHT_SLOTS = {
    "MatMulInteger": (1, 3),
    "ConvInteger": (1, 3),
    "QLinearMatMul": (3, 5),
    "QLinearConv": (3, 5),
}


def exact_integer_model(model: Path) -> Path | bytes:
    """`model` as onnxruntime computes it exactly on every x86 CPU (`unsigned_integer_weights`):
    the file itself, or the rewritten model serialized."""
    import onnx

    header = onnx.load(str(model), load_external_data=False)
    if not any(n.op_type in _INTEGER_WEIGHT_SLOTS for n in header.graph.node):
        return model
    proto = onnx.load(str(model))
    if not unsigned_integer_weights(proto) or proto.ByteSize() >= 2**31:
        return model  # protobuf serializes 2 GiB at most: such a model is taken as written
    return proto.SerializeToString()


def unsigned_integer_weights(proto: Any) -> bool:
    """Re-express (in place) every constant int8 weight of an integer matmul/conv in `proto`
    as uint8 (+128, zero point +128): the same integers, so the same math. Whether any was.

    Without VNNI, onnxruntime's uint8 x int8 kernels sum pairs of products into int16 with
    vpmaddubsw, which saturates (255 * 127 * 2 > 32767): on an AVX2 host a dynamically
    quantized encoder's reference moved by 0.11 and a full-range MatMulInteger by 26551,
    while tvmflow's kernels are exact. Its uint8 x uint8 kernels widen to int16 first."""
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    types = _elem_types(proto)
    changed = False
    for node in graph.node:
        slots = _INTEGER_WEIGHT_SLOTS.get(node.op_type)
        if slots is None or len(node.input) <= slots[0]:
            continue
        activation_zp = node.input[2] if len(node.input) > 2 else ""  # A's / x's zero point
        a_type = types.get(activation_zp) or types.get(node.input[0])
        if a_type != onnx.TensorProto.UINT8:
            continue  # int8 x int8 is exact: only uint8 x int8 pairs saturate
        w_slot, zp_slot = slots
        weight = inits.get(node.input[w_slot])
        if weight is None or weight.data_type != onnx.TensorProto.INT8:
            continue
        zp_name = node.input[zp_slot] if len(node.input) > zp_slot else ""
        zp_init = inits.get(zp_name) if zp_name else None
        if zp_name and zp_init is None:
            continue  # a computed zero point: leave the node as written
        w = numpy_helper.to_array(weight).astype(np.int16)
        zp = numpy_helper.to_array(zp_init).astype(np.int16) if zp_init is not None else 0
        name = f"{node.output[0]}__unsigned"
        graph.initializer.extend(
            [
                numpy_helper.from_array((w + 128).astype(np.uint8), f"{name}_w"),
                numpy_helper.from_array(np.asarray(zp + 128).astype(np.uint8), f"{name}_zp"),
            ]
        )
        while len(node.input) <= zp_slot:
            node.input.append("")
        node.input[w_slot] = f"{name}_w"
        node.input[zp_slot] = f"{name}_zp"
        changed = True
    if changed:  # drop the int8 originals nothing reads now (onnxruntime warns about each)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        kept = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return changed


def _elem_types(proto: Any) -> dict[str, int]:
    """Element type of each value whose type the graph states or shape inference finds."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # inference is a convenience here: declared types still count
        inferred = proto.graph
    types = {i.name: i.data_type for i in proto.graph.initializer}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        if info.type.HasField("tensor_type"):
            types.setdefault(info.name, info.type.tensor_type.elem_type)
    for node in proto.graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            types.setdefault(node.output[0], onnx.TensorProto.UINT8)
    return types


def onnxruntime_outputs(
    model: Path, feeds: Mapping[str, np.ndarray], threads: int | None = None
) -> dict[str, np.ndarray]:
    """The accuracy reference: the original ONNX file on onnxruntime's CPU provider, its
    ops as written (`onnxruntime_session(as_written=True)`)."""
    from tvmflow.engines import onnxruntime_session

    for name, array in feeds.items():
        if np.asarray(array).dtype.kind == "V":  # ml_dtypes: bfloat16, float8, int4, ...
            raise TvmflowError(
                f"onnxruntime's Python API cannot take input {name!r} of "
                f"{np.asarray(array).dtype}, so there is no reference to check against; "
                "compile with --no-verify (verify=False)"
            )
    session = onnxruntime_session(exact_integer_model(model), threads or 0, as_written=True)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


RANKING_OPS = frozenset({"TopK", "NonMaxSuppression"})


def ranked_outputs(model: Path) -> frozenset[str]:
    """Graph outputs computed from a TopK's or NonMaxSuppression's result (a detector's
    boxes, scores and labels). Scores that tie to within rounding may come out in either
    order, and which of them a cut keeps may differ, in any two correct implementations;
    such outputs are compared row by row as sets where the ordered comparison fails."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    reached: set[str] = set()
    for node in graph.node:  # topological order (ONNX requires it)
        if node.op_type in RANKING_OPS or any(i in reached for i in node.input if i):
            reached.update(node.output)
    return frozenset(o.name for o in graph.output if o.name in reached)


def _errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Max abs error, max error relative to b's magnitude, cosine similarity."""
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))
    return max_abs, max_rel, cosine


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    """x's rows (along axis 0) in lexicographic order of their values."""
    rows = x.reshape(x.shape[0], -1).astype(np.float64)
    return rows[np.lexsort(rows.T[::-1])] if rows.shape[1] else rows


def compare(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    quant: Mapping[str, tuple[float, int]] | None = None,
    ranked: frozenset[str] = frozenset(),
) -> tuple[OutputAccuracy, ...]:
    """Max abs error, max error relative to the output's magnitude, cosine similarity, and
    the quantization steps allowed (`quant_allowance`) where given; `ranked` outputs
    (`ranked_outputs`) are also compared as sets of rows, and the closer reading counts."""
    allowance = quant or {}
    results = []
    for name, ref in expected.items():
        got = np.asarray(actual[name])
        ref = np.asarray(ref)
        if got.shape != ref.shape:
            raise ValueError(f"output {name!r}: shape {got.shape} != onnxruntime's {ref.shape}")
        errors = _errors(got, ref)
        as_set = False
        if name in ranked and got.ndim and got.shape[0] > 1 and errors[0] > 0:
            unordered = _errors(_sorted_rows(got), _sorted_rows(ref))
            as_set = unordered[0] < errors[0]
            errors = unordered if as_set else errors
        step, count = allowance.get(name, (None, 0))
        results.append(OutputAccuracy(name, *errors, step, count, as_set))
    return tuple(results)


def output_scales(expected: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {
        k: float(np.abs(np.asarray(v, np.float64)).max(initial=0.0)) for k, v in expected.items()
    }
