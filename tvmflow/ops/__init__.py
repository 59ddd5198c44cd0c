"""tvmflow's ONNX op converters: ops TVM 0.27's Relax importer lacks or converts wrongly.

TVM's importer looks every node up in `onnx_frontend._get_convert_map()`, a module function
with no hook for extra converters, so `install()` replaces that function once with one that
returns TVM's table merged with this registry. Each op lives in its own module and declares a
`Converter`: its (domain, op) key, the opset range it implements and whether it replaces a
converter TVM has (then TVM's stays in charge outside that range). `MODULES` is the explicit
list; building the registry refuses a duplicate key.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

# One module per op (or per family sharing one implementation), in tvmflow/ops/.
MODULES = (
    "lstm",
    "gru",
    "rnn",
    "nll_loss",
    "softmax_cross_entropy_loss",
    "layer_normalization",
    "dropout",
    "cumprod",
    "elementwise",
    "lp_normalization",
    "attention",
    # newops
    "rotary_embedding",
    "causal_conv_with_state",
    "linear_attention",
    "signal",
    "training",
    "center_crop_pad",
    "reverse_sequence",
    "tensor_scatter",
    "col2im",
    "tfidf_vectorizer",
    "scan",
    "det",
    "flex_attention",
    "deform_conv",
    "loop",
    # int8
    "quantized",
    # opfix
    "non_max_suppression",
    "rms_normalization",
    "pow",
    "resize",
    "is_inf",
    "eye_like",
    "one_hot",
    "reduce_extremes",
    "split",
    "batch_normalization",
    "max_unpool",
    "max_pool",
    "top_k",
    # cast
    "cast",
    "quantize_linear",
    "bitcast",
    # integrator
    "conv_transpose",
    # rnn
    "slice",
    # reduce
    "einsum",
)

DEFAULT_DOMAIN = ""


@dataclass(frozen=True)
class Converter:
    """An ONNX op converter: a TVM `OnnxOpConverter` subclass valid for opsets since..until."""

    op: str
    impl: type
    since: int
    until: int | None = None
    domain: str = DEFAULT_DOMAIN
    replaces: bool = False  # True: TVM converts this op too, but wrongly in since..until

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.op)

    def covers(self, opset: int) -> bool:
        return opset >= self.since and (self.until is None or opset <= self.until)


@functools.cache
def registry() -> dict[tuple[str, str], Converter]:
    """Every converter in `MODULES`, by (domain, op); a key registered twice is an error."""
    table: dict[tuple[str, str], Converter] = {}
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        for conv in module.CONVERTERS:
            if conv.key in table:
                raise RuntimeError(f"ONNX converter {conv.key} is registered twice ({name})")
            table[conv.key] = conv
    return table


def supports(domain: str, op: str, opset: int) -> bool:
    """Whether the patched importer converts `op` of `domain` at this opset."""
    conv = registry().get((domain, op))
    if conv is not None and conv.covers(opset):
        return True
    return domain in ("", "ai.onnx") and op in _tvm_convert_map()


@functools.cache
def _tvm_convert_map() -> dict[str, Any]:
    from tvm.relax.frontend.onnx import onnx_frontend

    original = getattr(onnx_frontend._get_convert_map, "__wrapped__", None)
    return dict((original or onnx_frontend._get_convert_map)())


def _dispatch(conv: Converter, fallback: Any) -> type:
    """A converter class that takes `conv` inside its opset range and TVM's outside it."""
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    def get_converter(cls: type, opset: int) -> Any:
        if conv.covers(opset) or fallback is None:
            return conv.impl.get_converter(opset)  # type: ignore[attr-defined]
        return fallback.get_converter(opset)

    return type(conv.op, (OnnxOpConverter,), {"get_converter": classmethod(get_converter)})


@functools.cache
def convert_map() -> dict[str, Any]:
    """TVM's converter table with tvmflow's merged in, by op name (TVM ignores domains)."""
    table = _tvm_convert_map()
    merged = dict(table)
    default_ops = {c.op for c in registry().values() if c.domain == DEFAULT_DOMAIN}
    for conv in registry().values():
        if conv.domain != DEFAULT_DOMAIN:
            # TVM looks nodes up by op name alone and passes the default domain's opset
            if conv.op in table or conv.op in default_ops:
                raise RuntimeError(f"ONNX converter {conv.key}: its op name is taken")
            merged[conv.op] = conv.impl
            continue
        if (conv.op in table) != conv.replaces:
            raise RuntimeError(
                f"ONNX converter {conv.op}: replaces={conv.replaces} but TVM "
                f"{'has' if conv.op in table else 'lacks'} a converter for it"
            )
        merged[conv.op] = _dispatch(conv, table.get(conv.op))
    return merged


def install() -> None:
    """Make TVM's ONNX importer use `convert_map()` and convert shape values for ops that
    read tensors and type data-dependent dims (`dynamic_values`); idempotent."""
    from tvm.relax.frontend.onnx import onnx_frontend

    from tvmflow.ops import dynamic_values

    dynamic_values.install()
    current = onnx_frontend._get_convert_map
    if getattr(current, "__wrapped__", None) is not None:
        return
    original = current

    @functools.wraps(original)
    def patched() -> dict[str, Any]:
        return convert_map()

    patched.__wrapped__ = original  # type: ignore[attr-defined]
    onnx_frontend._get_convert_map = patched
