"""Frontend: reading, checking and shape-fixing ONNX models, with every bad-input case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvmflow import zoo
from tvmflow.cli import main
from tvmflow.errors import TvmflowError
from tvmflow.frontend import load_onnx, to_relax


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _tiny(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto] | None = None,
    domains: tuple[str, ...] = (),
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits or [])
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def test_dynamic_dim_without_shape_names_input_dim_and_flag(zoo_dir: Path) -> None:
    with pytest.raises(TvmflowError) as err:
        load_onnx(zoo_dir / "conv_net.onnx")
    msg = str(err.value)
    assert "'image'" in msg and "dynamic dim 0" in msg and "'N'" in msg
    assert "--input-shape image=N,3,32,32" in msg


def test_cli_dynamic_dim_exit_2_one_line(zoo_dir: Path, tmp_path: Path, capsys) -> None:
    rc = main(["compile", str(zoo_dir / "conv_net.onnx"), "-t", "x86", "-o", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "--input-shape image=" in err and "Traceback" not in err


def test_unknown_input_name_lists_inputs(zoo_dir: Path) -> None:
    with pytest.raises(TvmflowError, match="unknown input.*nope.*inputs are image"):
        load_onnx(zoo_dir / "conv_net.onnx", {"nope": (1, 3, 32, 32)})


def test_shape_conflicting_with_fixed_dim(zoo_dir: Path) -> None:
    with pytest.raises(TvmflowError, match="dim 1 = 4, but the model fixes it to 3"):
        load_onnx(zoo_dir / "conv_net.onnx", {"image": (1, 4, 32, 32)})


def test_shape_of_wrong_rank(zoo_dir: Path) -> None:
    with pytest.raises(TvmflowError, match="expected 4"):
        load_onnx(zoo_dir / "conv_net.onnx", {"image": (1, 3, 32)})


def test_fixed_shapes_become_specs(zoo_dir: Path) -> None:
    model = load_onnx(zoo_dir / "mlp.onnx", {"x": (3, 64)})
    assert [(s.name, s.shape, s.dtype) for s in model.inputs] == [("x", (3, 64), "float32")]
    assert len(model.sha256) == 64


def test_unsupported_ops_listed_with_counts_and_first_node(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("FancyOp", ["a"], ["b"], name="fancy1", domain="com.acme"),
        helper.make_node("FancyOp", ["b"], ["c"], name="fancy2", domain="com.acme"),
        helper.make_node("Relu", ["c"], ["y"], name="tail"),
    ]
    path = _save(_tiny(nodes, domains=("com.acme",)), tmp_path / "m.onnx")
    with pytest.raises(TvmflowError) as err:
        load_onnx(path, {"x": (1, 4)})
    msg = str(err.value)
    assert "FancyOp (domain 'com.acme', opset 1) x2, first at node 'fancy1'" in msg


def test_unknown_standard_op_is_reported(tmp_path: Path) -> None:
    # A node TVM has no converter for, in the default domain (checker-valid model).
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("ImageDecoder", ["a"], ["y"], name="d"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [64])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [None, None, 3])
    graph = helper.make_graph(nodes, "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    path = _save(model, tmp_path / "image_decoder.onnx")
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    if "ImageDecoder" in _get_convert_map():
        pytest.skip("this TVM converts ImageDecoder")
    with pytest.raises(TvmflowError, match="ImageDecoder \\(domain 'ai.onnx', opset 20\\) x1"):
        load_onnx(path)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(TvmflowError, match="not an ONNX model|fails the ONNX checker"):
        load_onnx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TvmflowError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")


def test_checker_failure_is_one_line(tmp_path: Path) -> None:
    model = zoo.mlp()
    model.graph.node[0].input[1] = "no_such_tensor"
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    with pytest.raises(TvmflowError, match="fails the ONNX checker"):
        load_onnx(path, {"x": (1, 64)})


def _external_model(tmp_path: Path, location: str) -> Path:
    model = zoo.mlp()
    onnx.save(
        model,
        str(tmp_path / "ext.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    if location != "weights.bin":
        proto = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
        for init in proto.graph.initializer:
            for entry in init.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(proto, str(tmp_path / "ext.onnx"))
    return tmp_path / "ext.onnx"


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin")
    model = load_onnx(path, {"x": (2, 64)})
    assert model.inputs[0].shape == (2, 64)


def test_external_data_escaping_folder_is_refused(tmp_path: Path) -> None:
    sub = tmp_path / "model"
    sub.mkdir()
    path = _external_model(sub, "weights.bin")
    (sub / "weights.bin").rename(tmp_path / "weights.bin")
    proto = onnx.load(str(path), load_external_data=False)
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(proto, str(path))
    with pytest.raises(TvmflowError, match="outside the model's folder"):
        load_onnx(path, {"x": (1, 64)})


def test_shape_chain_is_folded_so_tvm_imports_it(tmp_path: Path) -> None:
    """Shape→Gather→Concat→Reshape, as torch exports flatten with a dynamic batch."""
    w = numpy_helper.from_array(np.ones((12, 3), np.float32), "w")
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    minus1 = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["x", "new_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph(nodes, "chain", [x], [y], [w, zero, minus1, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = _save(model, tmp_path / "chain.onnx")
    imported = load_onnx(path, {"x": (2, 3, 4)})
    assert not any(n.op_type == "Shape" for n in imported.proto.graph.node)
    mod = to_relax(imported)
    assert "main" in [gv.name_hint for gv in mod.get_global_vars()]


def _branching_on(inputs: list[onnx.ValueInfoProto], cond_from: str) -> onnx.ModelProto:
    """A graph whose If condition is computed from input COND_FROM."""
    const = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    branch = helper.make_graph(
        [helper.make_node("Identity", ["one"], ["r"])],
        "b",
        [],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1])],
    )
    nodes = [
        helper.make_node("ReduceSum", [cond_from], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
    ]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    return helper.make_model(helper.make_graph(nodes, "g", inputs, [y], [const, zero]))


def test_freeze_hint_names_a_flag_sized_input_only() -> None:
    """An importer failure in a model that branches on a sample rate suggests freezing it;
    one that branches on its image (a detector's 'no boxes' If) must not: freezing the
    image would bake one answer in (torchvision's SSD drew that advice)."""
    from tvmflow.frontend import _freeze_hint

    sr = helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1])
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    assert "--freeze sr=VALUE" in _freeze_hint(_branching_on([sr, image], "sr"))
    assert _freeze_hint(_branching_on([sr, image], "image")) == ""


def test_slimmed_graph_reading_an_undefined_value_is_folded_again_without_fusions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxslim 0.1.98's MatMul+Mul fusion dropped the Mul a Whisper decoder step's Reshape
    still read (corpus model whisper_decoder_kv): TVM's importer then failed on a name. A
    broken result is folded again with graph fusions skipped."""
    import onnxslim

    from tvmflow.frontend import _undefined_input

    real = onnxslim.slim
    calls: list[list[str]] = []

    def breaking_slim(proto: onnx.ModelProto, **kwargs: object) -> onnx.ModelProto:
        skip = list(kwargs.get("skip_optimizations") or [])  # type: ignore[call-overload]
        calls.append(skip)
        out = real(proto, **kwargs)  # type: ignore[arg-type]
        if "graph_fusion" not in skip:  # what the buggy fusion leaves: a dangling input
            out.graph.node[0].input[0] = "dropped_by_fusion"
        return out

    monkeypatch.setattr(onnxslim, "slim", breaking_slim)
    path = _save(_tiny([helper.make_node("Relu", ["x"], ["y"])]), tmp_path / "m.onnx")
    model = load_onnx(path, {"x": (2, 4)})
    assert calls == [[], ["graph_fusion"]]
    assert _undefined_input(model.proto.graph, set()) is None
    assert model.proto.graph.node[0].input[0] == "x"
    assert to_relax(model) is not None


def test_undefined_input_sees_subgraph_scopes() -> None:
    """A subgraph may read its enclosing graph's values; reading a later one is undefined."""
    from tvmflow.frontend import _undefined_input

    branch = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["r"])],
        "b",
        [],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1])],
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    ok = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
    ]
    assert _undefined_input(helper.make_graph(ok, "g", [x, c], [y]), set()) is None
    assert _undefined_input(helper.make_graph(ok[::-1], "g", [x, c], [y]), set()) == "a"
