"""ONNX Einsum (opset 12+) as Relax's `einsum` op instead of an opaque TE kernel.

TVM's converter emits `topi.einsum` directly as a prim func call, so no graph pass can see
the einsum: `tvmflow.einsum_matmul.EinsumAsMatmul` then could not turn MaxViT's attention
products into matmuls. The Relax op legalizes to the same `topi.einsum` where that pass
leaves it.
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter


class Einsum(OnnxOpConverter):
    @classmethod
    def _impl_v12(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Any:
        equation = attr["equation"].decode("utf-8").replace(" ", "")
        return relax.op.einsum(list(inputs), equation)


CONVERTERS = (Converter("Einsum", Einsum, since=12, replaces=True),)
