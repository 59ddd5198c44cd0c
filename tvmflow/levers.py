"""Where a model's time goes, per op class, in tvmflow and in its peers; the next lever.

tvmflow's kernels (replayed one call at a time, `tvmflow.kernel_profile`), onnxruntime's
nodes (its profiler's per-node durations) and OpenVINO's executed nodes (PERF_COUNT) are
mapped onto the same op classes, so "tvmflow spends 9 ms more than OpenVINO in depthwise
convs" can be read off directly. Each engine's class times are medians over profiled runs,
sized to its end-to-end p50 (timed unprofiled, all engines interleaved) by their share of the
profiled runs; the rest of the p50 is its `call overhead` class. A kernel's fused epilogue
(bias, activation, residual add) counts with the conv or matmul it is fused into, as each
engine fuses it.

The next lever is the class where tvmflow is furthest behind the best peer (the peer with the
lower end-to-end p50, the bar issue 13 sets); its expected gain is that gap: the ratio tvmflow
would have if it matched the peer in that class and nothing else changed.

At `precision="bf16"` (an artifact built `--precision bf16`) the OpenVINO peer is OpenVINO at
its default precision (`openvino-default`: bf16 on CPUs with AVX512_BF16), the bar issue 13
sets for bf16; onnxruntime (fp32) stays beside it for reference.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

TVMFLOW, ONNXRUNTIME, OPENVINO = "tvmflow", "onnxruntime", "openvino"
OPENVINO_DEFAULT = "openvino-default"
CONV_1X1 = "conv 1x1"
CONV_3X3 = "conv 3x3"
CONV_OTHER = "conv other"
DEPTHWISE = "depthwise conv"
GROUPED = "grouped conv"
MATMUL = "matmul"
RECURRENT = "recurrent"
ATTENTION = "attention"
NORM = "normalization"
POOL = "pool/reduce"
ELEMENTWISE = "elementwise"
MOVE = "data movement"
OTHER = "other"
OVERHEAD = "call overhead"
CLASSES = (
    CONV_1X1,
    CONV_3X3,
    CONV_OTHER,
    DEPTHWISE,
    GROUPED,
    MATMUL,
    RECURRENT,
    ATTENTION,
    NORM,
    POOL,
    ELEMENTWISE,
    MOVE,
    OTHER,
    OVERHEAD,
)
# A node holding several ops gets the class of its heaviest one (first in this order).
PRIORITY = (
    RECURRENT,
    ATTENTION,
    GROUPED,
    DEPTHWISE,
    CONV_3X3,
    CONV_OTHER,
    CONV_1X1,
    MATMUL,
    NORM,
    POOL,
    OTHER,
    ELEMENTWISE,
    MOVE,
)


def conv_class(spatial: Sequence[int], in_per_group: int, groups: int) -> str:
    """A convolution's class from its kernel's spatial extents and its grouping."""
    if groups > 1:
        return DEPTHWISE if in_per_group == 1 else GROUPED
    if all(k == 1 for k in spatial):
        return CONV_1X1
    return CONV_3X3 if tuple(spatial) == (3, 3) else CONV_OTHER


def transposed_conv_class(kernel: Sequence[int], data: Sequence[int], output: Sequence[int]) -> str:
    """A transposed conv whose kernel equals its stride (an upsampling one, output/input per
    spatial dim) is a 1x1 conv to stride² times the channels plus a pixel shuffle: what
    tvmflow computes it as (`tvmflow.upsample_conv`), so it is compared as a conv 1x1."""
    spatial = len(kernel)
    if spatial and len(data) >= spatial and len(output) >= spatial:
        strides = [
            o / i if i else 0 for o, i in zip(output[-spatial:], data[-spatial:], strict=True)
        ]
        if all(k == s for k, s in zip(kernel, strides, strict=True)):
            return CONV_1X1
    return CONV_OTHER


def heaviest(classes: Iterable[str]) -> str:
    found = set(classes)
    return next((c for c in PRIORITY if c in found), MOVE)


# --------------------------------------------------------------------------------- tvmflow


def kernel_classes(mod: tvm.IRModule) -> dict[str, str]:
    """The class of every TIR kernel of a fused (scheduled or not) module, by name."""
    import tvm

    return {
        gv.name_hint: _named_class(gv.name_hint) or tir_class(func)
        for gv, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc)
    }


def _named_class(name: str) -> str | None:
    """The class of tvmflow's hand-written kernels (no blocks to read it from), by name."""
    for prefix, cls in _NAMED_KERNELS.items():
        if name.startswith(prefix):
            return cls
    return None


# tvmflow.ops' hand-written kernels: a whole LSTM / GRU / RNN time loop each (the input
# projection X*W runs before, as a matmul), NonMaxSuppression (the peers' NMS counts as
# other too) and NonZero (data movement, as the peers' tables have it)
_RECURRENT_KERNELS = ("lstm_sequence", "gru_sequence", "rnn_sequence")
_NAMED_KERNELS = {
    **dict.fromkeys(_RECURRENT_KERNELS, RECURRENT),
    "non_max_suppression": OTHER,
    "non_zero": MOVE,
}


def lowered_classes(fused: tvm.IRModule, lowered: tvm.IRModule) -> dict[str, str]:
    """Classes of the lowered module's kernels (the names the library calls), read off the
    fused, unscheduled module: scheduling drops unit reduction extents (a 1x1 conv's window,
    a depthwise conv's one input channel), so the class is decided before it. Kernels are
    paired by their order of calls in `main`, which scheduling keeps; a kernel that cannot be
    paired is classified from its scheduled form."""
    before, after = call_order(fused), call_order(lowered)
    unscheduled = kernel_classes(fused)
    classes = kernel_classes(lowered)
    if len(before) == len(after):
        classes |= {new: unscheduled[old] for old, new in zip(before, after, strict=True)}
    return classes


def call_order(mod: tvm.IRModule) -> list[str]:
    """The TIR kernels `main` calls, in order (one entry per call)."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    names: list[str] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            names.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return names


def tir_class(func: tvm.tirx.PrimFunc) -> str:
    """A kernel's class from its blocks: the op its reduction computes (conv by its reduction
    extents: input channels per group, then the kernel window), else softmax / norm / pool by
    TOPI's block names, else elementwise when a block computes, data movement when every
    block only copies."""
    import tvm_ffi
    from tvm import s_tir

    blocks: list[Any] = []
    tvm_ffi.structural_walk(func.body, [(s_tir.stmt.SBlock, blocks.append)], order="pre")
    return heaviest(_block_class(b) for b in blocks[1:])


def _block_class(block: Any) -> str:
    from tvmflow.qdq import CONV_BLOCK, DW_BLOCK

    name = str(block.name_hint).lower()
    # a reduction over a data-dependent size (after NonZero, TopK) has no static extent: -1
    reduce = [
        int(getattr(iv.dom.extent, "value", -1)) for iv in block.iter_vars if int(iv.iter_type) == 2
    ]
    if name.startswith("winograd"):
        return CONV_3X3  # tvmflow.winograd's kernels: 3x3 stride-1 convs only
    if name == DW_BLOCK:  # tvmflow.qdq's int8 depthwise conv: (ry, rx)
        return DEPTHWISE
    if name == CONV_BLOCK and len(reduce) == 4:  # tvmflow.qdq's int8 conv: (ry, rx, rc, ri)
        return conv_class(reduce[:2], reduce[2] * reduce[3], 1)
    if "softmax" in name:
        return ATTENTION
    if "conv" in name and "transpose" in name and reduce:
        return CONV_OTHER  # zero-dilated input (an upsampling one became a 1x1 conv before)
    if "conv" in name and reduce:
        grouped = "group" in name or "depthwise" in name
        in_per_group, spatial = (reduce[0], reduce[1:]) if len(reduce) > 1 else (1, reduce)
        return conv_class(spatial, in_per_group, 2 if grouped else 1)
    if ("matmul" in name or "dense" in name) and reduce:
        batched = [r for r in block.reads if len(r.source.shape) >= 3 and _batch(r.source.shape)]
        return ATTENTION if len(batched) >= 2 else MATMUL
    if "norm" in name:
        return NORM
    if reduce or "pool" in name:
        return POOL
    if any(k in name for k in ("resize", "transpose", "reshape", "concat", "split", "pad")):
        return MOVE
    return ELEMENTWISE if not _copies(block.body) else MOVE


def _batch(shape: Sequence[Any]) -> int:
    out = 1
    for d in shape[:-2]:
        out *= int(d) if hasattr(d, "value") or isinstance(d, int) else 1
    return out


def _copies(stmt: Any) -> bool:
    """Whether a block's body stores a loaded value unchanged (a copy, a gather, a pad)."""
    return type(stmt).__name__ == "BufferStore" and _is_copy(stmt.value)


def _is_copy(expr: Any) -> bool:
    kind = type(expr).__name__  # TIR's node classes (tvm.ir.prim / tirx), by name
    if kind in ("BufferLoad", "IntImm", "FloatImm"):
        return True
    if kind == "Cast":
        return _is_copy(expr.value)
    if kind == "Select":
        return _is_copy(expr.true_value) and _is_copy(expr.false_value)
    if kind == "Call" and str(getattr(expr.op, "name", "")).endswith("if_then_else"):
        return _is_copy(expr.args[1]) and _is_copy(expr.args[2])
    return False


# ----------------------------------------------------------------------------- onnxruntime

_ORT_CONV = {"Conv", "FusedConv", "NhwcConv", "NhwcFusedConv", "QLinearConv", "ConvInteger"}
_ORT_CLASSES = {
    "DeformConv": CONV_OTHER,
    **dict.fromkeys(
        (
            "Gemm",
            "FusedGemm",
            "MatMulInteger",
            "QLinearMatMul",
            "MatMulNBits",
            "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat",
        ),
        MATMUL,
    ),
    **dict.fromkeys(("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"), RECURRENT),
    **dict.fromkeys(
        (
            "Softmax",
            "LogSoftmax",
            "Attention",
            "MultiHeadAttention",
            "GroupQueryAttention",
            "DecoderMaskedMultiHeadAttention",
            "RotaryEmbedding",
        ),
        ATTENTION,
    ),
    **dict.fromkeys(
        (
            "LayerNormalization",
            "SkipLayerNormalization",
            "SimplifiedLayerNormalization",
            "SkipSimplifiedLayerNormalization",
            "BatchNormalization",
            "InstanceNormalization",
            "GroupNorm",
            "GroupNormalization",
            "LpNormalization",
            "MeanVarianceNormalization",
            "EmbedLayerNormalization",
            "RMSNormalization",
        ),
        NORM,
    ),
    **dict.fromkeys(
        (
            "MaxPool",
            "AveragePool",
            "GlobalAveragePool",
            "GlobalMaxPool",
            "LpPool",
            "ArgMax",
            "ArgMin",
            "CumSum",
            "TopK",
        ),
        POOL,
    ),
    **dict.fromkeys(
        (
            "Transpose",
            "Reshape",
            "Concat",
            "Split",
            "Slice",
            "Gather",
            "GatherElements",
            "GatherND",
            "Squeeze",
            "Unsqueeze",
            "Flatten",
            "Pad",
            "Expand",
            "Tile",
            "ReorderInput",
            "ReorderOutput",
            "Identity",
            "DepthToSpace",
            "SpaceToDepth",
            "Shape",
            "Size",
            "ScatterND",
            "ScatterElements",
            "Resize",
            "Upsample",
            "Cast",
            "Trilu",
            "ConstantOfShape",
            "Range",
            "NonZero",
            "Compress",
            "MemcpyFromHost",
            "MemcpyToHost",
        ),
        MOVE,
    ),
    **dict.fromkeys(("If", "Loop", "Scan", "NonMaxSuppression", "Einsum", "STFT", "DFT"), OTHER),
}
# Nodes that hold ops tvmflow keeps in separate classes: ORT's fused Attention also computes
# the Q/K/V projections (matmul), so matmul and attention are compared as one group then.
_ORT_SPANS = {
    "Attention": (MATMUL, ATTENTION),
    "MultiHeadAttention": (MATMUL, ATTENTION),
    "GroupQueryAttention": (MATMUL, ATTENTION),
    "EmbedLayerNormalization": (NORM, MOVE),
    **dict.fromkeys(("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"), (MATMUL, RECURRENT)),
}


def ort_node_class(
    op: str, shapes: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]] = ()
) -> str:
    """An onnxruntime node's class from its op type and its inputs' (and outputs') shapes,
    as its profiler writes them (a prepacked weight is left out)."""
    if op == "ConvTranspose":
        if len(shapes) < 2 or not outputs:
            return CONV_OTHER
        return transposed_conv_class(shapes[1][2:], shapes[0][2:], outputs[0][2:])
    if op in _ORT_CONV:
        w = 3 if op == "QLinearConv" else 1  # x, x_scale, x_zero_point, w, ...
        if len(shapes) <= w or len(shapes[w]) < 3:
            return CONV_OTHER
        data, weight = shapes[0], shapes[w]
        in_per_group = int(weight[1])
        groups = int(data[1]) // in_per_group if in_per_group and data[1] % in_per_group == 0 else 1
        return conv_class([int(k) for k in weight[2:]], in_per_group, groups)
    if op in ("MatMul", "FusedMatMul"):
        batched = [s for s in shapes[:2] if len(s) >= 3 and _batch(s) > 1]
        return ATTENTION if len(batched) >= 2 else MATMUL
    if op.startswith("Reduce"):
        return POOL
    return _ORT_CLASSES.get(op, ELEMENTWISE)


@dataclass(frozen=True)
class OpTime:
    """One executed node (or kernel) of one engine: its median time per inference."""

    name: str
    op: str
    op_class: str
    seconds: float
    spans: tuple[str, ...] = ()
    calls: int = 1  # a tvmflow kernel called several times per inference


@dataclass(frozen=True)
class OpProfile:
    """An engine's profiled ops (median time each) and, per profiled run, the share of the
    run's time its ops account for."""

    ops: tuple[OpTime, ...]
    covered: tuple[float, ...]

    def at(self, p50: float) -> tuple[OpTime, ...]:
        """The ops sized to a CPU-time p50 timed in other runs: each op keeps its share of the
        profile, and the ops together the share of the run they covered (the rest, between
        ops, is the engine's call overhead). Peers' node durations are wall time, which on a
        shared machine includes the time other processes held the core (more on longer
        nodes); tvmflow's kernel times are CPU time, but the load on the machine, which
        changes CPU time too (shared caches and cores), differs between the p50's rounds and
        the profiled runs."""
        total = sum(o.seconds for o in self.ops)
        if not total:
            return self.ops
        factor = p50 * statistics.median(self.covered or (1.0,)) / total
        return tuple(replace(o, seconds=o.seconds * factor) for o in self.ops)


def onnx_conv_weights(onnx_path: Path) -> dict[str, tuple[list[int], int]]:
    """Each Conv / ConvTranspose node's weight shape [O, I/groups, k...] and groups, by node
    name (through a DequantizeLinear for a QDQ model): onnxruntime's profiler leaves a
    prepacked weight's shape out (its int8 QLinearConv), and names the node after the graph's."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:  # a dequantized weight has its int8 initializer's shape
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    return {
        node.name: (
            shapes[node.input[1]],
            next((int(a.i) for a in node.attribute if a.name == "group"), 1),
        )
        for node in graph.node
        if node.op_type in ("Conv", "ConvTranspose") and node.name and node.input[1] in shapes
    }


def _graph_weight(
    node: str, weights: Mapping[str, tuple[list[int], int]]
) -> tuple[list[int], int] | None:
    """The weight of the graph node an onnxruntime node is named after (the longest graph
    node name it starts with: fused nodes get suffixes such as `_token_65`)."""
    found = [n for n in weights if node.startswith(n)]
    return weights[max(found, key=len)] if found else None


def ort_op_times(
    events: Sequence[Mapping[str, Any]],
    walls: Sequence[float] = (),
    weights: Mapping[str, tuple[list[int], int]] | None = None,
) -> OpProfile:
    """Per-node median time over the profiled runs, from onnxruntime's profile JSON (a node
    that did not run in some runs, inside an If branch, counts 0 there), and each run's
    node time over its wall time (`walls`, else its `model_run` event)."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    per_node: dict[str, list[float]] = {}
    kind: dict[str, tuple[str, str]] = {}
    in_run = [0.0] * len(runs)
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        op = str(args.get("op_name", "?"))
        shapes = [next(iter(s.values())) for s in args.get("input_type_shape", [])]
        outputs = [next(iter(s.values())) for s in args.get("output_type_shape", [])]
        node = f"{name[: -len('_kernel_time')]}#{args.get('node_index', '')}"
        if op in _ORT_CONV and weights and not _weight_known(op, shapes):
            graph = _graph_weight(name[: -len("_kernel_time")], weights)
            if graph is not None:  # as the graph's Conv: input channels = groups * I/groups
                weight, groups = graph
                shapes = [[1, weight[1] * groups], weight]
                op = "Conv"
        kind[node] = (str(args.get("op_name", "?")), ort_node_class(op, shapes, outputs))
        per_node.setdefault(node, []).append(float(e["dur"]) * 1e-6)
        run = next(
            (i for i, r in enumerate(runs) if r["ts"] <= e["ts"] <= r["ts"] + r["dur"]), None
        )
        if run is not None:
            in_run[run] += float(e["dur"]) * 1e-6
    count = max(len(runs), 1)
    ops = tuple(
        OpTime(
            node,
            kind[node][0],
            kind[node][1],
            min(durs + [0.0] * max(count - len(durs), 0)),
            _ORT_SPANS.get(kind[node][0], ()),
        )
        for node, durs in per_node.items()
    )
    walls = list(walls) if len(walls) == len(runs) else [float(r["dur"]) * 1e-6 for r in runs]
    covered = tuple(min(n / w, 1.0) for n, w in zip(in_run, walls, strict=True) if w > 0)
    return OpProfile(ops, covered)


def _weight_known(op: str, shapes: Sequence[Sequence[int]]) -> bool:
    w = 3 if op == "QLinearConv" else 1
    return len(shapes) > w and len(shapes[w]) >= 3


def ort_profile(
    onnx_path: Path, feeds: Mapping[str, Any], threads: int, runs: int, scratch: Path
) -> OpProfile:
    """Profile onnxruntime as `engines.onnxruntime_session` opens it (default graph
    optimizations); the first run (allocations, weight prepacking) is left out."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(scratch / "ort-profile")
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    session.run(None, dict(feeds))
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, dict(feeds))
        walls.append(time.perf_counter() - start)
    events = json.loads(Path(session.end_profiling()).read_text())
    return ort_op_times(after_first_run(events), walls, onnx_conv_weights(onnx_path))


def after_first_run(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The profile's events after its first `model_run` (the warm-up) ended."""
    first = min(
        (e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"], default=None
    )
    if first is None:
        return list(events)
    end = first["ts"] + first["dur"]
    return [e for e in events if e["ts"] >= end]


# -------------------------------------------------------------------------------- OpenVINO

_OV_CLASSES = {
    "DeformableConvolution": CONV_OTHER,
    **dict.fromkeys(("FullyConnected", "Gemm"), MATMUL),
    **dict.fromkeys(("RNNSeq", "RNNCell", "LSTMSequence", "GRUSequence"), RECURRENT),
    **dict.fromkeys(("Softmax", "ScaledDotProductAttention", "RoPE"), ATTENTION),
    **dict.fromkeys(
        ("MVN", "NormalizeL2", "RMS", "BatchNormInference", "LayerNorm", "GroupNormalization"),
        NORM,
    ),
    **dict.fromkeys(("Pooling", "Reduce", "AdaptivePooling", "TopK", "CumSum"), POOL),
    **dict.fromkeys(
        (
            "Reorder",
            "Transpose",
            "Reshape",
            "Squeeze",
            "Unsqueeze",
            "Concatenation",
            "Split",
            "StridedSlice",
            "Slice",
            "Gather",
            "GatherElements",
            "GatherND",
            "Pad",
            "Broadcast",
            "Tile",
            "Interpolate",
            "DepthToSpace",
            "SpaceToDepth",
            "ShuffleChannels",
            "Convert",
            "ShapeOf",
            "ScatterUpdate",
            "ScatterNDUpdate",
            "ScatterElementsUpdate",
            "Range",
            "NonZero",
        ),
        MOVE,
    ),
    **dict.fromkeys(("If", "TensorIterator", "Loop", "NonMaxSuppression", "RDFT", "DFT"), OTHER),
}
_OV_IDLE = {"Input", "Output", "Const", "Parameter", "Result"}
# original (opset) op types, for OpenVINO nodes that hold several (Subgraph: fused elementwise
# chains, or a whole attention block)
_OV_OPSET = {
    "Convolution": CONV_OTHER,
    "GroupConvolution": GROUPED,
    "MatMul": MATMUL,
    "Softmax": ATTENTION,
    "MVN": NORM,
    "ReduceMean": POOL,
    "ReduceSum": POOL,
    "ReduceMax": POOL,
}


def ov_node_class(
    layer: str,
    shapes: Sequence[Sequence[int]],
    inputs: Sequence[str],
    outputs: Sequence[Sequence[int]] = (),
) -> str:
    """An OpenVINO executed node's class from its layer type, its inputs' (and outputs')
    shapes and the layer types of the nodes feeding it ("Const" for weights)."""
    if layer == "Deconvolution":
        if len(shapes) < 2 or not outputs:
            return CONV_OTHER
        return transposed_conv_class(shapes[1][2:], shapes[0][2:], outputs[0][2:])
    if layer in ("Convolution", "GroupConvolution") and len(shapes) > 1 and len(shapes[1]) >= 3:
        data, weight = shapes[0], shapes[1]
        if len(weight) == len(data) + 1:  # grouped: [groups, out per group, in per group, k..]
            return conv_class([int(k) for k in weight[3:]], int(weight[2]), int(weight[0]))
        return conv_class([int(k) for k in weight[2:]], int(weight[1]), 1)
    if layer == "MatMul":
        activations = [
            s for s, src in zip(shapes, inputs, strict=False) if src != "Const" and len(s) >= 3
        ]
        return ATTENTION if len(activations) >= 2 and _batch(activations[1]) > 1 else MATMUL
    return _OV_CLASSES.get(layer, ELEMENTWISE)


def ov_profile(
    onnx_path: Path,
    shapes: Mapping[str, Sequence[int]],
    feeds: Mapping[str, Any],
    threads: int,
    runs: int,
    engine: str = OPENVINO,
) -> OpProfile:
    """Profile OpenVINO as `engines.OpenVino` (f32) or `engines.OpenVinoDefault` (its
    default precision) runs it (latency hint), with PERF_COUNT."""
    from tvmflow.engines import _DYNAMIC_QUANT, ENGINES, import_openvino

    ov = import_openvino()
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    model.reshape({k: list(v) for k, v in shapes.items()})
    originals = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "PERF_COUNT": True,
    }
    hint = getattr(ENGINES[engine], "hint", None)
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
        if _DYNAMIC_QUANT in core.get_property("CPU", "SUPPORTED_PROPERTIES"):
            config[_DYNAMIC_QUANT] = 0
    compiled = core.compile_model(model, "CPU", config)
    nodes = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer = rt["layerType"].astype(str)
        if layer in _OV_IDLE:
            continue
        shapes_in = [
            [d.get_length() if d.is_static else 1 for d in op.input(i).get_partial_shape()]
            for i in range(op.get_input_size())
        ]
        sources = [
            op.input_value(i).get_node().get_rt_info()["layerType"].astype(str)
            for i in range(op.get_input_size())
        ]
        shapes_out = [
            [d.get_length() if d.is_static else 1 for d in op.output(i).get_partial_shape()]
            for i in range(op.get_output_size())
        ]
        cls = ov_node_class(layer, shapes_in, sources, shapes_out)
        held = [
            originals.get(n.strip(), "") for n in rt["originalLayersNames"].astype(str).split(",")
        ]
        inner = {_OV_OPSET[t] for t in held if t in _OV_OPSET}
        if layer == "Subgraph" and inner:
            cls = ATTENTION if {MATMUL, ATTENTION} <= inner else heaviest(inner)
        nodes[op.get_friendly_name()] = (layer, cls)
    request = compiled.create_infer_request()
    request.infer(dict(feeds))
    samples: dict[str, list[float]] = {}
    covered = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer(dict(feeds))
        wall = time.perf_counter() - start
        in_run = 0.0
        for info in request.get_profiling_info():
            if str(info.status).endswith("EXECUTED") and info.node_name in nodes:
                seconds = info.real_time.total_seconds()
                samples.setdefault(info.node_name, []).append(seconds)
                in_run += seconds
        covered.append(min(in_run / wall, 1.0))
    ops = tuple(
        OpTime(
            name,
            *nodes[name],
            min(t + [0.0] * (runs - len(t))),
            (MATMUL, RECURRENT) if nodes[name][1] == RECURRENT else (),
        )
        for name, t in samples.items()
    )
    return OpProfile(ops, tuple(covered))


# ------------------------------------------------------------------------------- measuring


def interleaved_p50(
    runners: Mapping[str, Callable[[], object]], rounds: int, per_round: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds of each runner over alternating rounds (one warm-up
    each first), so a busy shared machine slows every engine alike. At one thread CPU time
    is the robust measure on a shared machine: it leaves out the time others held the core."""
    for run in runners.values():
        run()
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    med = statistics.median
    return {name: (med(wall[name]), med(cpu[name])) for name in runners}


def tvm_profile(
    vm: Any, args: Sequence[Any], classes: Mapping[str, str], runs: int, kernels: Any = None
) -> OpProfile:
    """tvmflow's kernels timed in place: the Relax VM's instrument hook brackets every kernel
    call of an inference with process CPU time (at one thread the kernel runs on the calling
    thread, so time other processes held the core is left out), in the real call order with
    the real cache state. Per call the median over `runs` inferences, less the hook's own
    cost (the median bracket around the VM's no-op builtins, e.g. `vm.builtin.null_value`:
    a microsecond or two). A call shorter than `SMALL_CALL` in place is timed by replaying
    it instead (`time_evaluator` on `kernels`, the library's kernel module, with its real
    arguments): there the hook's cost, which grows with the call's argument count, is no
    longer small against the call. Summed per kernel.

    Each profiled inference follows an unprofiled one, timed alike: the kernels' share of
    those (`OpProfile.covered`) sizes them to the p50 of other runs. Taking the p50's rounds
    and these runs minutes apart on a shared machine, the load (and with it the CPU time of
    every kernel) differs by several percent, which the share cancels: sized to the p50
    directly, the kernels left or took that much of the p50 as `call overhead`, several
    times the VM's own cost between kernels (1-4 % of a call on the reference models)."""
    samples: list[list[float]] = []
    names: list[str] = []
    idle: list[float] = []
    plain: list[float] = []

    def instrument(func: Any, symbol: str, before: bool, ret: Any, *call_args: Any) -> int:
        name = str(symbol)
        if name in classes or name in _NO_OPS:
            if before:
                run.append(-time.process_time())
            else:
                run[-1] += time.process_time()
                order.append(name)
        return 0

    vm["main"](*args)  # warm
    for _ in range(runs):
        start = time.process_time()
        vm["main"](*args)
        plain.append(time.process_time() - start)
        run: list[float] = []
        order: list[str] = []
        vm.set_instrument(instrument)
        try:
            vm["main"](*args)
        finally:
            vm.set_instrument(None)
        idle.extend(t for t, n in zip(run, order, strict=True) if n in _NO_OPS)
        samples.append([t for t, n in zip(run, order, strict=True) if n in classes])
        names = [n for n in order if n in classes]
    hook = statistics.median(idle) if idle else 0.0
    times = [
        max(statistics.median(s[i] for s in samples if i < len(s)) - hook, 0.0)
        for i in range(len(names))
    ]
    if kernels is not None and any(t < SMALL_CALL for t in times):
        import tvm

        from tvmflow.kernel_profile import capture_kernel_calls

        calls = capture_kernel_calls(vm, list(args), set(classes))
        if [name for name, _ in calls] == names:
            for i, (name, call_args) in enumerate(calls):
                if times[i] < SMALL_CALL:
                    timer = kernels.time_evaluator(name, tvm.cpu(0), number=20, repeat=5)
                    times[i] = float(timer(*call_args).median)
    totals: dict[str, list[float]] = {}
    for name, seconds in zip(names, times, strict=True):
        entry = totals.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds
    ops = tuple(
        OpTime(name, f"{int(n)} calls", classes[name], seconds, calls=int(n))
        for name, (n, seconds) in sorted(totals.items(), key=lambda kv: -kv[1][1])
    )
    kernel_sum = sum(times)
    return OpProfile(ops, tuple(kernel_sum / t for t in plain if t > 0))


SMALL_CALL = 20e-6  # seconds: in-place kernel calls shorter than this are timed by replay
# VM builtins that do (next to) nothing: their bracket is what the instrument hook costs
_NO_OPS = frozenset({"vm.builtin.null_value", "vm.builtin.ensure_zero_offset"})


@dataclass(frozen=True)
class MeasureOptions:
    threads: int = 1
    rounds: int = 3
    per_round: int = 10
    profile_runs: int = 10  # profiled inferences per engine (medians per node / kernel)
    precision: str = "fp32"  # the artifact's: bf16 is compared with OpenVINO's default

    @property
    def openvino(self) -> str:
        """The OpenVINO engine of this precision's comparison (`tvmflow.engines` name)."""
        return OPENVINO if self.precision == "fp32" else OPENVINO_DEFAULT


def measure(
    name: str,
    directory: Path,
    onnx_path: Path,
    classes: Mapping[str, str],
    options: MeasureOptions,
    scratch: Path,
) -> tuple[Standing, dict[str, str]]:
    """Time an artifact beside onnxruntime and OpenVINO (f32, or its default precision for a
    bf16 artifact: `options.openvino`), profile all three per op and attribute; also returns
    why a peer is missing (OpenVINO cannot open every model)."""
    import numpy as np
    import tvm
    from tvm import relax

    from tvmflow.engines import ENGINES, EngineSpec, onnxruntime_session
    from tvmflow.inputs import random_inputs
    from tvmflow.kernel_profile import set_threads
    from tvmflow.manifest import LIBRARY_NAME, read_manifest
    from tvmflow.runtime import weight_tensors

    manifest = read_manifest(directory)
    feeds = random_inputs(manifest.inputs, seed=0)
    peer_feeds = {**feeds, **{f.spec.name: f.array() for f in manifest.frozen}}
    shapes = {k: list(np.shape(v)) for k, v in peer_feeds.items()}

    set_threads(options.threads)
    dev = tvm.cpu(0)
    library = tvm.runtime.load_module(str(directory / LIBRARY_NAME))
    vm = relax.VirtualMachine(library, dev)
    args = [tvm.runtime.tensor(np.asarray(feeds[i.name], order="C"), dev) for i in manifest.inputs]
    args += weight_tensors(directory, manifest, dev)
    session = onnxruntime_session(onnx_path, options.threads)
    runners: dict[str, Callable[[], object]] = {
        TVMFLOW: lambda: vm["main"](*args),
        ONNXRUNTIME: lambda: session.run(None, peer_feeds),
    }
    missing: dict[str, str] = {}
    openvino = options.openvino
    try:
        spec = EngineSpec(openvino, str(onnx_path), options.threads, shapes=shapes)
        ov_run = ENGINES[openvino].open(spec).run
        ov_run(peer_feeds)
        runners[openvino] = lambda: ov_run(peer_feeds)
    except Exception as exc:  # OpenVINO's errors have no common type
        missing[openvino] = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "?"
    p50 = interleaved_p50(runners, options.rounds, options.per_round)

    runs = options.profile_runs
    kernel_lib = library.imports[0] if library.imports else library
    tvm_ops = tvm_profile(vm, args, classes, runs, kernel_lib).at(p50[TVMFLOW][1])
    ort_ops = ort_profile(onnx_path, peer_feeds, options.threads, runs, scratch)
    ort_p50 = p50[ONNXRUNTIME]
    peers = [EngineBreakdown(ONNXRUNTIME, ort_p50[1], ort_ops.at(ort_p50[1]), ort_p50[0])]
    if openvino in runners:
        ov_ops = ov_profile(onnx_path, shapes, peer_feeds, options.threads, runs, openvino)
        ov_p50 = p50[openvino]
        peers.append(EngineBreakdown(openvino, ov_p50[1], ov_ops.at(ov_p50[1]), ov_p50[0]))
    mine = EngineBreakdown(TVMFLOW, p50[TVMFLOW][1], tvm_ops, p50[TVMFLOW][0])
    return standing(name, mine, peers), missing


# ----------------------------------------------------------------------------- attribution


@dataclass(frozen=True)
class EngineBreakdown:
    """One engine's end-to-end p50 (process CPU time per inference at one thread) and its
    time per op class (overhead included); `wall_p50` is kept for comparison."""

    engine: str
    p50: float
    ops: tuple[OpTime, ...]
    wall_p50: float = 0.0

    @property
    def op_total(self) -> float:
        return sum(o.seconds for o in self.ops)

    @property
    def coverage(self) -> float:
        """Sum of the profiled ops over the end-to-end p50 (1.0: the profile explains it)."""
        return self.op_total / self.p50 if self.p50 else 0.0

    def calls(self, groups: Mapping[str, str]) -> dict[str, int]:
        """Kernel calls / executed nodes per class: where engines agree on how many convs of
        a kind a model has, the mapping is sane (fusion makes small differences)."""
        out: dict[str, int] = {}
        for o in self.ops:
            key = groups.get(o.op_class, o.op_class)
            out[key] = out.get(key, 0) + o.calls
        return out

    def by_class(self, groups: Mapping[str, str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for o in self.ops:
            key = groups.get(o.op_class, o.op_class)
            out[key] = out.get(key, 0.0) + o.seconds
        out[OVERHEAD] = self.p50 - self.op_total
        return out


def compare_groups(engines: Sequence[EngineBreakdown]) -> dict[str, str]:
    """Classes compared as one because some engine's node spans them (class -> group name)."""
    groups: dict[str, str] = {}
    for e in engines:
        for o in e.ops:
            if len(o.spans) > 1:
                members = sorted(
                    {m for s in o.spans for m in groups.get(s, s).split("+")}, key=CLASSES.index
                )
                name = "+".join(members)
                for m in members:
                    groups[m] = name
    return groups


@dataclass(frozen=True)
class Lever:
    op_class: str
    gap: float  # tvmflow's seconds in this class minus the best peer's
    ratio_after: float  # tvmflow / best peer p50, had tvmflow matched the peer in this class


@dataclass(frozen=True)
class Standing:
    """A model's ratio to its best peer, per-class times of every engine, levers by gain."""

    model: str
    tvmflow: EngineBreakdown
    peers: tuple[EngineBreakdown, ...]
    table: dict[str, dict[str, float]]  # class -> engine -> seconds
    levers: tuple[Lever, ...]

    @property
    def best(self) -> EngineBreakdown:
        return min(self.peers, key=lambda p: p.p50)

    @property
    def ratio(self) -> float:
        return self.tvmflow.p50 / self.best.p50


def standing(model: str, tvmflow: EngineBreakdown, peers: Sequence[EngineBreakdown]) -> Standing:
    """Per-class table and the levers (classes where tvmflow is behind the best peer), the
    largest gap first; a lever's `ratio_after` is the end-to-end ratio with that gap gone."""
    groups = compare_groups([tvmflow, *peers])
    engines = [tvmflow, *peers]
    per = {e.engine: e.by_class(groups) for e in engines}
    keys = sorted({k for v in per.values() for k in v}, key=_class_order)
    table = {k: {e.engine: per[e.engine].get(k, 0.0) for e in engines} for k in keys}
    best = min(peers, key=lambda p: p.p50)
    levers = [
        Lever(k, row[tvmflow.engine] - row[best.engine], 0.0)
        for k, row in table.items()
        if row[tvmflow.engine] > row[best.engine]
    ]
    levers = [
        Lever(lv.op_class, lv.gap, (tvmflow.p50 - lv.gap) / best.p50)
        for lv in sorted(levers, key=lambda lv: -lv.gap)
    ]
    return Standing(model, tvmflow, tuple(peers), table, tuple(levers))


def _class_order(key: str) -> int:
    return CLASSES.index(key.split("+")[0]) if key.split("+")[0] in CLASSES else len(CLASSES)


def top_ops(breakdown: EngineBreakdown, op_class: str, n: int = 2) -> list[OpTime]:
    """The slowest nodes / kernels of one class (a group name matches each member)."""
    members = op_class.split("+")
    ops = [o for o in breakdown.ops if o.op_class in members]
    return sorted(ops, key=lambda o: -o.seconds)[:n]


def format_standing(s: Standing) -> str:
    """A plain-text table: ms per class per engine, tvmflow minus the best peer, levers."""
    engines = [s.tvmflow, *s.peers]
    best = s.best.engine
    head = f"{'class':<26}" + "".join(f"{e.engine:>12}" for e in engines) + f"{'gap':>10}"
    lines = [
        f"{s.model}: tvmflow {s.tvmflow.p50 * 1e3:.3f} ms, best peer {best} "
        f"{s.best.p50 * 1e3:.3f} ms, ratio {s.ratio:.2f}x",
        "profile coverage (sum of ops / p50): "
        + ", ".join(f"{e.engine} {e.coverage:.0%}" for e in engines),
        head,
    ]
    for key, row in s.table.items():
        gap = row[s.tvmflow.engine] - row[best]
        lines.append(
            f"{key:<26}"
            + "".join(f"{row[e.engine] * 1e3:12.3f}" for e in engines)
            + f"{gap * 1e3:+10.3f}"
        )
    for lv in s.levers[:3]:
        kernels = ", ".join(
            f"{o.name} {o.seconds * 1e3:.2f} ms" for o in top_ops(s.tvmflow, lv.op_class)
        )
        lines.append(
            f"lever {lv.op_class}: -{lv.gap * 1e3:.3f} ms -> {lv.ratio_after:.2f}x"
            + (f" ({kernels})" if kernels else "")
        )
    return "\n".join(lines)
