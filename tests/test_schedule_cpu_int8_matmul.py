"""Int8Matmul: u8 x i8 -> i32 matmuls with constant weights tensorized with VNNI vpdpbusd."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import assert_schedule_matches, fused_module, only_kernel
from tvmflow.lowering import build
from tvmflow.schedules import apply_default_schedules, kernel_rules
from tvmflow.schedules.cpu_int8_matmul import Int8Matmul, has_vnni
from tvmflow.targets import host_cpu_features, resolve_preset

VNNI = tvm.target.Target(resolve_preset("x86-avx512-vnni").target)
AVX512 = tvm.target.Target(resolve_preset("x86-avx512").target)
needs_vnni = pytest.mark.skipif(
    "avx512_vnni" not in host_cpu_features(), reason="this host has no AVX512-VNNI"
)
RNG = np.random.default_rng(0)
M, K, N = 24, 72, 48


def _weight(k: int = K, n: int = N) -> np.ndarray:
    return RNG.integers(-128, 128, (k, n)).astype("int8")


def _graph(
    weight: np.ndarray, offset: np.ndarray
) -> tuple[dict[str, tuple[tuple[int, ...], str]], Callable[..., relax.Expr]]:
    """u8 activations x int8 constant, minus a per-column int32 term (a zero-point epilogue)."""

    def body(x):
        y = relax.op.matmul(x, relax.const(weight), out_dtype="int32")
        return relax.op.subtract(y, relax.const(offset))

    return {"x": ((M, weight.shape[0]), "uint8")}, body


def test_only_vnni_targets_with_constant_weights_and_whole_tiles_are_claimed():
    w = _weight()
    inputs, body = _graph(w, np.arange(N, dtype="int32"))
    assert has_vnni(VNNI) and not has_vnni(AVX512)
    assert Int8Matmul().apply(only_kernel(inputs, body, VNNI), VNNI, False) is not None
    assert Int8Matmul().apply(only_kernel(inputs, body, AVX512), AVX512, False) is None
    # N not a multiple of 16
    odd_inputs, odd_body = _graph(_weight(n=40), np.arange(40, dtype="int32"))
    assert Int8Matmul().apply(only_kernel(odd_inputs, odd_body, VNNI), VNNI, False) is None

    def activation_weight(x, b):
        return relax.op.matmul(x, b, out_dtype="int32")

    both: dict[str, tuple[tuple[int, ...], str]] = {"x": ((M, K), "uint8"), "b": ((K, N), "int8")}
    assert Int8Matmul().apply(only_kernel(both, activation_weight, VNNI), VNNI, False) is None


def test_the_schedule_tensorizes_with_vpdpbusd_and_prepacks_the_weight():
    inputs, body = _graph(_weight(), np.arange(N, dtype="int32"))
    sch = Int8Matmul().apply(only_kernel(inputs, body, VNNI), VNNI, False)
    assert sch is not None
    script = sch.mod["main"].script()
    assert "llvm.x86.avx512.vpdpbusd.512" in script
    assert "meta_schedule.layout_rewrite_preproc" in script  # weight repacked at compile time


@needs_vnni
def test_kernel_is_bit_exact_and_passes_the_kernel_check():
    w = _weight()
    offset = RNG.integers(-(2**20), 2**20, N).astype("int32")
    inputs, body = _graph(w, offset)
    func = only_kernel(inputs, body, VNNI)
    sch = Int8Matmul().apply(func, VNNI, False)
    assert sch is not None
    assert_schedule_matches(func, sch, VNNI)
    mod = fused_module(inputs, body, VNNI)
    assert set(kernel_rules(mod, VNNI).values()) == {"Int8Matmul"}
    vm = relax.VirtualMachine(build(apply_default_schedules(mod, VNNI), VNNI), tvm.cpu())
    x = RNG.integers(0, 256, (M, K)).astype("uint8")
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, x.astype(np.int32) @ w.astype(np.int32) - offset)


@needs_vnni
def test_the_kernel_check_catches_a_wrong_int8_kernel():
    """A tensorized kernel reading a wrongly packed weight is rejected: 8-bit integer inputs
    are random over their whole range in the check (all-zero data would hide it)."""
    from tvmflow.kernel_check import RuleKernel, check

    inputs, body = _graph(_weight(), np.zeros(N, dtype="int32"))
    func = only_kernel(inputs, body, VNNI)
    sch = Int8Matmul().apply(func, VNNI, False)
    assert sch is not None
    good = sch.mod["main"]
    # rotate the output channels inside each packed 16x4 tile: a wrong weight layout
    bad_script = good.script().replace(
        "v1 % T.int64(16), v0 % T.int64(4)]", "(v1 + T.int64(1)) % T.int64(16), v0 % T.int64(4)]"
    )
    assert bad_script != good.script()
    bad = tvm.script.from_source(bad_script)
    [rejected] = check([RuleKernel("k", "rule Int8Matmul", func, bad)], VNNI)
    assert "differ from the reference" in rejected.reason


def test_fixed_intrinsic_coexists_with_tvms_x86_intrinsics():
    """Tuning-record replay imports TVM's x86 intrinsics; after ours that must not clash, and
    `dot_16x4_vnni` stays the fixed one (operands as <64 x i8>)."""
    from tvm.s_tir import TensorIntrin

    from tvmflow.schedules.cpu_int8_matmul import VNNI_INTRIN, register_vnni_intrin
    from tvmflow.tunelog import register_tensor_intrinsics

    register_vnni_intrin()
    register_tensor_intrinsics(VNNI)
    assert "uint8x64" in TensorIntrin.get(VNNI_INTRIN).impl.script()


def test_an_epilogue_value_used_twice_is_computed_once_per_tile():
    """h = requantized(acc) read twice (h * (h + 1), as a QDQ GELU reads its input): it is
    computed once into a per-tile buffer, not inlined into both uses, and stays exact."""
    w = _weight()

    def body(x):
        acc = relax.op.matmul(x, relax.const(w), out_dtype="int32")
        h = relax.op.divide(relax.op.astype(acc, "float32"), relax.const(np.float32(3.0)))
        return relax.op.multiply(h, relax.op.add(h, relax.const(np.float32(1.0))))

    inputs: dict[str, tuple[tuple[int, ...], str]] = {"x": ((M, K), "uint8")}
    func = only_kernel(inputs, body, VNNI)
    sch = Int8Matmul().apply(func, VNNI, False)
    assert sch is not None
    script = sch.mod["main"].script()
    assert script.count(" / T.float32(3.0)") == 1  # one division: h is not recomputed
    if "avx512_vnni" in host_cpu_features():
        assert_schedule_matches(func, sch, VNNI)


def test_replaying_records_registers_our_intrinsics_in_a_fresh_process():
    """Compile replays tuning records before any rule runs; a record of a kernel these rules
    tensorized names `tvmflow_dot_16x4_vnni_local` ("not registered" crashed the compile)."""
    import subprocess
    import sys

    code = (
        "import tvm\n"
        "from tvm.s_tir import TensorIntrin\n"
        "from tvmflow.tunelog import register_tensor_intrinsics\n"
        "register_tensor_intrinsics(tvm.target.Target({'kind': 'llvm', 'mcpu': 'znver4'}))\n"
        "print(TensorIntrin.get('tvmflow_dot_16x4_vnni_local') is not None)\n"
        "print('uint8x64' in TensorIntrin.get('dot_16x4_vnni').impl.script())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
