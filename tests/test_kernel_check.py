"""kernel_check: a rule's bad schedule is caught at compile time and replaced by the reference."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir
from tvm.s_tir.dlight import ScheduleRule

from tests.kernels import TARGET, fused_kernels, fused_module, only_kernel
from tvmflow import kernel_check
from tvmflow.kernel_check import RuleKernel, check, schedule_checked
from tvmflow.schedules import default_rules
from tvmflow.schedules.cpu_elementwise import Elementwise


class DropsBorder(ScheduleRule):
    """Moves a pad under its producer's loop: TVM keeps only the iterations that read the
    producer, so the border is never written (the bug class the check exists for)."""

    def apply(self, func, target, tunable):
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        names = [sch.get(b).name_hint for b in blocks]
        if "PadInput" not in names:
            return None
        pad = blocks[names.index("PadInput")]
        producer = blocks[names.index("PadInput") - 1]
        sch.reverse_compute_at(pad, sch.get_loops(producer)[0])
        return sch


class Raises(ScheduleRule):
    def apply(self, func, target, tunable):
        raise RuntimeError("rule bug")


def _relu_pad(consumer=None):
    """relu -> pad (-> consumer): one fused kernel."""

    def body(x):
        y = relax.op.nn.pad(relax.op.nn.relu(x), [0, 0, 0, 0, 1, 1, 0, 2])
        return consumer(y) if consumer else y

    return {"x": ((1, 4, 6, 6), "float32")}, body


def test_unwritten_output_is_caught():
    func = only_kernel(*_relu_pad())
    sch = DropsBorder().apply(func, TARGET, False)
    [bad] = check([RuleKernel("k", "DropsBorder", func, sch.mod["main"])], TARGET)
    assert bad.rule == "DropsBorder" and "memory held before the run" in bad.reason


def test_unwritten_scratch_is_caught():
    """The pad is an intermediate here: its buffer is scratch, which the check poisons too."""
    func = only_kernel(*_relu_pad(lambda y: relax.op.add(y, relax.const(1.0))))
    sch = DropsBorder().apply(func, TARGET, False)
    assert "PadInput" in sch.mod["main"].script()
    assert check([RuleKernel("k", "DropsBorder", func, sch.mod["main"])], TARGET)


def test_correct_schedules_pass_on_every_cpu_target():
    func = only_kernel(*_relu_pad(lambda y: relax.op.add(y, relax.const(1.0))))
    for target in (TARGET, tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})):
        sch = Elementwise().apply(func, target, False)
        assert sch is not None
        assert check([RuleKernel("k", "Elementwise", func, sch.mod["main"])], target) == []


@pytest.mark.parametrize("out", ["float16", "float32"])
def test_an_fp16_reduction_reordered_by_its_schedule_passes(out, recwarn):
    """An fp16 softmax keeps its running sums in fp16: the vectorized schedule's order moves
    outputs by a few fp16 units (distilbert_fp16's attention fell back to the serial
    reference, 2.9 ms of 63), also where its result is cast to fp32 for an fp32 matmul; the
    poisons stay finite in fp16 (no overflow warning)."""
    one_core = tvm.target.Target({**TARGET.export(), "num-cores": 1})
    func = only_kernel(
        {"x": ((1, 12, 64, 64), "float16")},
        lambda x: relax.op.astype(relax.op.nn.softmax(x, axis=-1), out),
        one_core,
    )
    kernels, _ = kernel_check.apply_rules(
        tvm.IRModule({"softmax": func}), one_core, default_rules(one_core)
    )
    assert [k.rule for k in kernels] == ["rule SingleCore"]
    assert check(kernels, one_core) == []
    assert not [w for w in recwarn if "overflow" in str(w.message)]
    broken = np.float16(1.02)  # a 2 % error is still caught
    assert kernel_check._mismatches(np.ones(8, np.float16), np.full(8, broken)) == 8


@pytest.mark.parametrize("rule", [DropsBorder(), Raises()], ids=["wrong", "raises"])
def test_bad_rule_falls_back_with_one_line_and_the_model_stays_right(rule, caplog):
    inputs, body = _relu_pad()
    mod = fused_module(inputs, body)
    with caplog.at_level(logging.WARNING, logger="tvmflow.kernel_check"), TARGET:
        mod = schedule_checked(mod, TARGET, [rule, *default_rules(TARGET)])
    [line] = [r.getMessage() for r in caplog.records]
    assert type(rule).__name__ in line and "fused_relu_pad" in line
    assert "reference schedule" in line
    exe = relax.build(mod, target=TARGET)
    vm = relax.VirtualMachine(exe, tvm.cpu())
    x = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype("float32")
    expected = np.pad(np.maximum(x, 0), [(0, 0), (0, 0), (1, 1), (0, 2)])
    for _ in range(2):
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)


def test_real_constants_feed_the_check():
    """Where the model binds a kernel argument to a constant, the check uses its value."""
    inputs = {"x": ((2, 8), "float32")}
    weight = np.arange(24, dtype="float32").reshape(8, 3)
    mod = fused_module(inputs, lambda x: relax.op.matmul(x, relax.const(weight)))
    constants = kernel_check.call_constants(mod)
    [(name, args)] = constants.items()
    assert any(a is not None and np.array_equal(a, weight) for a in args), name


def test_kernels_already_scheduled_are_left_alone():
    kernels = fused_kernels(*_relu_pad())
    mod = fused_module(*_relu_pad())
    name = next(iter(kernels))
    mod[name] = mod[name].with_attr("tirx.is_scheduled", True)
    with TARGET:
        scheduled, rejected = kernel_check.apply_rules(mod, TARGET, [Raises()])
    assert scheduled == [] and rejected == []


def test_bad_tuning_record_goes_back_to_the_default_rules(caplog):
    """Records replay tvmflow's own rules with tuned knobs: they are checked the same way."""
    before = fused_module(*_relu_pad())
    after = fused_module(*_relu_pad())
    [name] = [gv.name_hint for gv, f in after.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    sch = DropsBorder().apply(after[name], TARGET, False)
    after[name] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    with caplog.at_level(logging.WARNING, logger="tvmflow.kernel_check"):
        checked, dropped = kernel_check.check_tuned(before, after, TARGET)
    assert dropped == 1 and checked[name].same_as(before[name])
    [line] = [r.getMessage() for r in caplog.records]
    assert "tuning record" in line and name in line and "default rules" in line


def _conv_relu():
    return only_kernel(
        {"x": ((1, 8, 10, 10), "float32")},
        lambda x: relax.op.nn.relu(
            relax.op.nn.conv2d(x, relax.const(np.ones((16, 8, 3, 3), "float32")), padding=1)
        ),
    )


def _wrong_init(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """The same schedule with its accumulators starting at 1: deterministic, wrong."""
    import tvm_ffi

    def bump(value):
        return tvm.tirx.FloatImm(str(value.ty), 1.0) if value.value == 0.0 else value

    return func.with_body(tvm_ffi.structural_map(func.body, [(tvm.tirx.FloatImm, bump)]))


def test_partial_reference_for_large_kernels_still_catches_wrong_values(monkeypatch):
    """Above the work cap the reference runs part of the reduction; the values it computed
    are still compared, and every value is still checked for reads of unwritten memory."""
    from tvmflow.schedules.cpu_conv2d import Conv2d

    monkeypatch.setattr(kernel_check, "REFERENCE_WORK_CAP", 2000)
    func = _conv_relu()
    sch = Conv2d().apply(func, TARGET, False)
    assert sch is not None
    scheduled = sch.mod["main"]
    good = RuleKernel("k", "rule Conv2d", func, scheduled)
    assert kernel_check._Case.of(good).partial
    assert check([good], TARGET) == []
    [bad] = check([RuleKernel("k", "rule Conv2d", func, _wrong_init(scheduled))], TARGET)
    assert "differ from the reference" in bad.reason


def test_a_passed_check_is_not_repeated_in_the_process(monkeypatch):
    sch = Elementwise().apply(only_kernel(*_relu_pad()), TARGET, False)
    assert sch is not None
    kernel = RuleKernel("k", "rule Elementwise", only_kernel(*_relu_pad()), sch.mod["main"])
    assert check([kernel], TARGET) == []
    monkeypatch.setattr(kernel_check, "_build", None)  # would raise if a build were attempted
    assert check([kernel], TARGET) == []


def test_gpu_tuning_records_are_not_checked_on_the_host():
    before = fused_module(*_relu_pad())
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
    checked, dropped = kernel_check.check_tuned(before, before, cuda)
    assert dropped == 0 and checked is before


@pytest.mark.parametrize("op", [relax.op.floor_divide, relax.op.floor_mod, relax.op.divide])
def test_integer_division_by_data_is_checked_without_dividing_by_zero(op):
    """Integer inputs are 0 (an index valid on any axis) unless the kernel divides by its
    data: then 1, since an integer division by zero is SIGFPE, which killed the compile (the
    ONNX node tests test_div_uint8, test_mod_* ran into it)."""
    func = only_kernel({"a": ((4, 8), "int32"), "b": ((4, 8), "int32")}, op)
    assert kernel_check._divides_by_data(func)
    sch = Elementwise().apply(func, TARGET, False)
    assert sch is not None
    assert check([RuleKernel("k", "Elementwise", func, sch.mod["main"])], TARGET) == []


def test_index_arithmetic_is_not_division_by_data():
    func = only_kernel({"x": ((2, 3, 4, 4), "float32")}, lambda x: relax.op.reshape(x, (6, 16)))
    assert not kernel_check._divides_by_data(func)
