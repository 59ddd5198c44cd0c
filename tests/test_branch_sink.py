"""Models with an If on a run-time input: the work around it fused, each branch's own work
done only when that branch is taken (`tvmflow.branch_sink`), the branches' weights in the
weights file, and onnxruntime's numbers either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvmflow
from tvmflow.accuracy import onnxruntime_outputs
from tvmflow.cli import main
from tvmflow.frontend import load_onnx
from tvmflow.lowering import LoweringOptions, fused_module, kernel_names, lower
from tvmflow.targets import resolve_preset


def gated_model(path: Path) -> Path:
    """h = tanh(x * w + b) * 2; y = relu(h @ wt + bt) if flag else sigmoid(h * we). TVM's
    importer puts both branches' ops before the If; wt, bt and we only one branch reads."""
    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    def branch(name: str, nodes: list[onnx.NodeProto]) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, [1, 64])
        return helper.make_graph(nodes, name, [], [out])

    then_branch = branch(
        "then",
        [
            helper.make_node("MatMul", ["h", "wt"], ["hw"]),
            helper.make_node("Add", ["hw", "bt"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["yt"]),
        ],
    )
    else_branch = branch(
        "else",
        [helper.make_node("Mul", ["h", "we"], ["he"]), helper.make_node("Sigmoid", ["he"], ["ye"])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["t"]),
            helper.make_node("Mul", ["t", "two"], ["h"]),
            helper.make_node(
                "If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch
            ),
        ],
        "gated",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [
            weight("w", (1, 64)),
            weight("b", (1, 64)),
            numpy_helper.from_array(np.full((1, 64), 2.0, np.float32), "two"),
            weight("wt", (64, 64)),
            weight("bt", (64,)),
            weight("we", (1, 64)),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gated_model(tmp_path_factory.mktemp("gated") / "gated.onnx")


def _calls_in_main(mod: tvm.IRModule) -> list[str]:
    """Kernels main itself calls (not through another Relax function)."""
    names: list[str] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and str(expr.op) == "Op(relax.call_tir)":
            names.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return names


def test_work_around_and_inside_an_if_is_fused(gated: Path) -> None:
    """FuseOps fuses only a function's own dataflow blocks: the chain before the If and each
    branch's chain are one kernel each, not one per op (one VM call each)."""
    target = tvm.target.Target(resolve_preset("x86").target)
    mod = fused_module(load_onnx(gated), target, "fp32")
    names = kernel_names(mod)
    assert any(n.startswith("fused_") and "tanh" in n and "add" in n for n in names), names
    assert any(n.startswith("fused_matmul") and "relu" in n for n in names), names
    assert not any(n in ("add", "multiply", "relu") or n.startswith("fast_tanh") for n in names)
    in_main = _calls_in_main(mod)
    assert not any("matmul" in n or "relu" in n for n in in_main), in_main  # moved to branch
    branches = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, relax.Function)]
    assert sorted(branches) == ["main", "main_branch", "main_branch1"]


def test_branch_weights_are_arguments_not_library_constants(gated: Path) -> None:
    lowered = lower(load_onnx(gated), resolve_preset("x86"), LoweringOptions())
    constants: list[tvm.ir.GenericConst] = []
    for _, func in lowered.mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(
                func, lambda e: constants.append(e) if isinstance(e, tvm.ir.GenericConst) else None
            )
    assert not constants, "a weight stayed inside the library"
    assert any(w.shape == (64, 64) or w.size == 64 * 64 for w in lowered.weights)


def test_both_branches_give_onnxruntimes_numbers(gated: Path, tmp_path: Path) -> None:
    assert main(["compile", str(gated), "-t", "x86", "-o", str(tmp_path / "art")]) == 0
    model = tvmflow.load(tmp_path / "art")
    rng = np.random.default_rng(1)
    for flag in (True, False, True):
        feeds = {"x": rng.standard_normal((1, 64)).astype(np.float32), "flag": np.array(flag)}
        expected = onnxruntime_outputs(gated, feeds)["y"]
        np.testing.assert_allclose(model.run(feeds)["y"], expected, rtol=1e-5, atol=1e-5)


def _lifted_branches_run(module: tvm.IRModule, sizes: tuple[int, ...]) -> None:
    """`module` (x, flag -> ones like x if flag else 2 x) fuses with its branch lifted, and
    builds and computes that for each size of x."""
    from tvmflow.lowering import build, fuse
    from tvmflow.schedules import apply_default_schedules

    target = tvm.target.Target(resolve_preset("x86").target)
    fused = fuse(module, target)
    assert "main_branch" in [gv.name_hint for gv, _ in fused.functions_items()]
    vm = relax.VirtualMachine(build(apply_default_schedules(fused, target), target), tvm.cpu())
    for size in sizes:
        x = np.arange(size, dtype="float32")
        for flag, want in ((True, np.ones(size, "float32")), (False, 2 * x)):
            got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(np.array(flag)))
            np.testing.assert_array_equal(got.numpy(), want)


def test_a_branch_using_a_symbolic_shape_builds_and_runs() -> None:
    """The lifted branch takes the caller's shape variable as an argument (TVM passes it as
    a PrimValue): both branches build and compute what they did inline."""
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvm.script import tirx as T

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor(("n",), "float32"), flag: R.Tensor((), "bool")):  # type: ignore[valid-type]
            n = T.int64()
            y = R.add(x, x)
            z = R.zeros(R.shape([n]), "float32")
            w = R.add(z, R.const(1.0, "float32"))
            if flag:  # noqa: SIM108 (TVMScript's If, not a Python conditional)
                r = w
            else:
                r = y
            return r

    _lifted_branches_run(Module, sizes=(5,))


def test_a_branch_using_a_size_known_only_in_the_body_is_lifted() -> None:
    """A shape variable the caller binds in its body (a data-dependent size: match_cast after
    NonZero, TopK with a run-time k), not through a parameter's type: the lifted branch takes
    it as a shape argument. Inline, FuseOps failed on the branch ("could not be found in any
    group")."""
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvm.script import tirx as T

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor(ndim=1, dtype="float32"), flag: R.Tensor((), "bool")):  # type: ignore[valid-type]
            n = T.int64()
            xs = R.match_cast(x, R.Tensor((n,), "float32"))
            y = R.add(xs, xs)
            z = R.zeros(R.shape([n]), "float32")
            w = R.add(z, R.const(1.0, "float32"))
            if flag:  # noqa: SIM108 (TVMScript's If, not a Python conditional)
                r = w
            else:
                r = y
            return r

    _lifted_branches_run(Module, sizes=(5, 2))
