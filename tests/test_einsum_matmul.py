"""einsum_matmul.EinsumAsMatmul: two-operand einsums that are matrix products become matmuls
(with permutes / reshapes around them) and compute what the einsum computes."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import TARGET
from tvmflow.einsum_matmul import EinsumAsMatmul, matmul_plan

CASES = {
    # MaxViT's attention scores and context: batch B G H, rows I, columns J / D
    "scores": ("bghid,bghjd->bghij", (1, 2, 3, 5, 8), (1, 2, 3, 7, 8)),
    "context": ("bghij,bghjd->bghid", (1, 2, 3, 5, 7), (1, 2, 3, 7, 8)),
    "spaced": ("B H I D, B H J D -> B H I J", (2, 3, 4, 8), (2, 3, 6, 8)),
    # rows / columns / contraction over several dims, output in another order
    "merged": ("abkl,klcd->dcba", (2, 3, 4, 5), (4, 5, 6, 7)),
    "transposed-out": ("ik,kj->ji", (5, 6), (6, 7)),
}


def _einsum_module(subscripts: str, shape_a, shape_b) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(shape_a, "float32"))
    b = relax.Var("b", relax.TensorType(shape_b, "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.einsum([a, b], subscripts))
        bb.emit_func_output(out)
    return bb.get()


def _ops(mod: tvm.IRModule) -> set[str]:
    import tvm_ffi

    found: set[str] = set()
    tvm_ffi.structural_walk(
        mod["main"].body,
        [(relax.Call, lambda c: found.add(getattr(c.op, "name", "")))],
        order="pre",
    )
    return found


def _run(mod: tvm.IRModule, *args: np.ndarray) -> np.ndarray:
    with TARGET:
        mod = relax.transform.LegalizeOps()(mod)
    executable = tvm.compile(mod, target=TARGET)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](*(tvm.runtime.tensor(x) for x in args)).numpy()


@pytest.mark.parametrize("name", CASES)
def test_einsum_becomes_matmul_with_same_result(name):
    subscripts, shape_a, shape_b = CASES[name]
    mod = _einsum_module(subscripts, shape_a, shape_b)
    rewritten = EinsumAsMatmul()(mod)
    assert "relax.einsum" not in _ops(rewritten)
    assert "relax.matmul" in _ops(rewritten)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape_a).astype("float32")
    b = rng.standard_normal(shape_b).astype("float32")
    expected = np.einsum(subscripts.replace(" ", "").lower(), a, b)
    np.testing.assert_allclose(_run(rewritten, a, b), expected, rtol=1e-5, atol=1e-5)


def test_plain_batched_matmul_needs_no_permutes():
    plan = matmul_plan("bij,bjk->bik", [2, 3, 4], [2, 4, 5])
    assert plan is not None
    assert (plan.perm_a, plan.perm_b, plan.perm_out) == ([0, 1, 2], [0, 1, 2], [0, 1, 2])


@pytest.mark.parametrize(
    ("subscripts", "shape_a", "shape_b"),
    [
        ("ij,jk", [2, 3], [3, 4]),  # implicit output
        ("...ij,...jk->...ik", [2, 3], [3, 4]),  # ellipsis
        ("ii,ij->j", [3, 3], [3, 4]),  # a repeated letter (trace)
        ("ij,jk->k", [2, 3], [3, 4]),  # i summed within one operand
        ("bij,bjk->bik", [1, 3, 4], [2, 4, 5]),  # broadcast batch
        ("i,j->ij", [3], [4]),  # outer product
    ],
)
def test_other_einsums_are_kept(subscripts, shape_a, shape_b):
    assert matmul_plan(subscripts, shape_a, shape_b) is None


@pytest.mark.parametrize(
    ("equation", "shapes"),
    [
        ("B G H I D, B G H J D -> B G H I J", [(1, 2, 3, 5, 8), (1, 2, 3, 7, 8)]),  # MaxViT
        ("...ii->...i", [(2, 3, 3)]),  # not a matrix product: TVM's einsum kernel
    ],
    ids=["maxvit-scores", "batch-diagonal"],
)
def test_onnx_einsum_matches_onnxruntime(equation, shapes, tmp_path, monkeypatch):
    """The Einsum converter (`tvmflow/ops/einsum.py`) hands the graph a Relax einsum, which
    this pass or TVM's legalization then computes."""
    from tests.onnx_ops import assert_matches, one_node_model

    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))
    rng = np.random.default_rng(1)
    inputs = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    model, feeds = one_node_model("Einsum", inputs, ["y"], 12, equation=equation)
    assert_matches(model, feeds)
