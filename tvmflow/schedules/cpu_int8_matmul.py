"""CPU rule for u8 x i8 -> i32 matmul kernels with a constant weight: VNNI dot products.

`C[.., m, n] += i32(A[.., m, k]) * i32(W[k, n])` with A uint8, W an int8 constant, as
tvmflow's integer-matmul lowering (`tvmflow.ops.quantized`) emits it. The weight is
prepacked at compile time as [N/16, K/4, 16, 4] (folded into the constant): one 64-byte
row per 16 outputs x 4 reductions, the operand `vpdpbusd` multiplies against 4 broadcast
bytes of A. The stock intrinsic's plain [N, K] use gave wrong results and its LLVM call no
longer builds on LLVM 22 (wants <64 x i8> operands); `dot_16x4_vnni` is re-registered here
with the fixed call. Targets without AVX512-VNNI get no schedule from this rule (the plain
Matmul rule takes the kernel): AVX-512's pmaddubsw fallback saturates its 16-bit pair sums
(255*127*2 > 32767), so it would not be exact.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    PREPACK_ATTR,
    extents,
    fuse_epilogue,
    is_layout_free,
    open_single_reduction,
    schedule_spatial,
    vector_lanes,
)
from tvmflow.schedules.cpu_matmul import matmul_roles

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

from tvm.s_tir.dlight import ScheduleRule

VNNI_INTRIN = "dot_16x4_vnni"
VNNI_INTRIN_LOCAL = "tvmflow_dot_16x4_vnni_local"
LANES = 16  # i32 accumulators per 512-bit vector
GROUP = 4  # u8 x i8 products summed into each accumulator per instruction
# LLVM CPU names with AVX512-VNNI.
VNNI_CPUS = frozenset(
    {
        "cascadelake",
        "cooperlake",
        "icelake-client",
        "icelake-server",
        "tigerlake",
        "rocketlake",
        "sapphirerapids",
        "emeraldrapids",
        "graniterapids",
        "znver4",
        "znver5",
    }
)
# Register tile: rows x 16-lane vectors (accumulators + loaded vectors + 1 broadcast <= 32).
_TILES = ((8, 2), (6, 4), (4, 4), (4, 2), (2, 2), (1, 4), (1, 2), (1, 1))


def has_vnni(target: tvm.target.Target) -> bool:
    """Whether the target's code may use AVX512-VNNI (its CPU name or an explicit mattr)."""
    mcpu = str(target.attrs.get("mcpu", ""))
    mattr = [str(a) for a in target.attrs.get("mattr", [])]
    return mcpu in VNNI_CPUS or "+avx512vnni" in mattr


@functools.cache
def register_vnni_intrin() -> str:
    """Register the intrinsics (idempotent): `dot_16x4_vnni` re-registered with an LLVM
    22-valid vpdpbusd call, and the same with its accumulator in registers (`local`), which
    this rule tensorizes with. Returns the latter's name."""
    import tvm

    from tvmflow.tunelog import register_tensor_intrinsics

    # the stock x86 intrinsics first (registered after ours, they would clash on the name);
    # that registers ours too, after them
    register_tensor_intrinsics(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu"}))
    return VNNI_INTRIN_LOCAL


@functools.cache
def register_own_intrinsics() -> None:
    """Ours over/after TVM's x86 ones (tunelog.register_tensor_intrinsics calls this once it
    has imported them): replaying a tuning record of a kernel a rule here tensorized needs
    the intrinsic its trace names."""
    from tvm.s_tir import TensorIntrin

    for name, scope in ((VNNI_INTRIN, "global"), (VNNI_INTRIN_LOCAL, "local")):
        desc, impl = _vnni_funcs(scope)
        TensorIntrin.register(name, desc, impl, override=True)


def _vnni_funcs(scope: str) -> tuple[Any, Any]:
    """Description and vpdpbusd implementation of C[16] += A[4] . B[16, 4] (u8 x i8 -> i32)
    with C in `scope`: the stock description, and the stock call with its operands passed
    as <64 x i8> as LLVM 22 declares them."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),  # type: ignore[valid-type]
        B: T.Buffer((16, 4), "int8", offset_factor=1),  # type: ignore[valid-type]
        C: T.Buffer((16,), "int32", offset_factor=1, scope=scope),  # type: ignore[valid-type]
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),  # type: ignore[valid-type]
        B: T.Buffer((16, 4), "int8", offset_factor=1),  # type: ignore[valid-type]
        C: T.Buffer((16,), "int32", offset_factor=1, scope=scope),  # type: ignore[valid-type]
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    return desc, impl


def _is_u8_i8_block(sch: s_tir.Schedule, block: Any, b_read: int) -> bool:
    stmt = sch.get(block)
    a = stmt.reads[1 - b_read].source.dtype
    b = stmt.reads[b_read].source.dtype
    out = stmt.writes[0].source.dtype
    return (str(a), str(b), str(out)) == ("uint8", "int8", "int32")


class Int8Matmul(ScheduleRule):
    """u8 x i8 -> i32 matmuls with a constant [K, N] weight on AVX512-VNNI targets."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        if not has_vnni(target):
            return None
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        main = infos[index]
        if main.dom_kind().count("R") != 1 or not main.dom_kind().endswith("R"):
            return None
        roles = matmul_roles(sch, main.block_rv)
        if roles is None:
            return None
        _, n_pos, b_read, k_dim = roles
        if k_dim is None or not _is_u8_i8_block(sch, main.block_rv, b_read):
            return None
        weight = sch.get(main.block_rv).reads[b_read]
        if not is_layout_free(func, weight.source) or len(weight.region) != 2:
            return None
        loops = [it.loop_rv for it in main.iters]
        sizes = extents(sch, loops)
        if sizes is None or sizes[n_pos] % LANES or sizes[-1] % GROUP:
            return None
        try:
            return self._schedule(sch, infos, index, roles, sizes, target)
        except (ScheduleError, InternalError):
            return None

    def _schedule(
        self,
        sch: s_tir.Schedule,
        infos: list[Any],
        index: int,
        roles: tuple[int | None, int, int, int | None],
        sizes: list[int],
        target: tvm.target.Target,
    ) -> s_tir.Schedule | None:
        m_pos, n_pos, b_read, k_dim = roles
        block = infos[index].block_rv
        # producers of the operands (the activation's quantize or shift) run once into a
        # buffer: tensorized loads need A in memory; others (zero points) are inlined into
        # the epilogue, which must find all its producers under the tile loop
        operands = {r.source for r in sch.get(block).reads}
        for info in infos[:index]:
            if not any(w.source in operands for w in sch.get(info.block_rv).writes):
                try:
                    sch.compute_inline(info.block_rv)
                    continue
                except ScheduleError:
                    pass
            schedule_spatial(sch, info.block_rv, vector_lanes(target))
        m = 1 if m_pos is None else sizes[m_pos]
        nvecs = sizes[n_pos] // LANES
        mr, nvec = next((r, v) for r, v in _TILES if m % r == 0 and nvecs % v == 0)
        # weight [K, N] -> [N/16, K/4, 16, 4], computed at compile time
        packed = sch.cache_read(block, b_read, "global")
        n_in_w = 1 - k_dim  # type: ignore[operator]

        def pack(*idx: Any) -> list[Any]:
            k, n = idx[k_dim], idx[n_in_w]  # type: ignore[index]
            return [n // LANES, k // GROUP, n % LANES, k % GROUP]

        sch.transform_layout(packed, ("write", 0), pack)
        sch.annotate(packed, PREPACK_ATTR, True)

        loops = sch.get_loops(block)
        acc = sch.cache_write(block, 0, "local")
        n_o, n_i, n_v = sch.split(loops[n_pos], factors=[None, nvec, LANES])
        k_o, k_i = sch.split(loops[-1], factors=[None, GROUP])
        batch = [lp for i, lp in enumerate(loops[:-1]) if i not in (m_pos, n_pos)]
        if m_pos is None:
            tiles = [*batch, n_o]
            sch.reorder(*tiles, k_o, n_i, n_v, k_i)
        else:
            m_o, m_i = sch.split(loops[m_pos], factors=[None, mr])
            tiles = [*batch, n_o, m_o]
            sch.reorder(*tiles, k_o, m_i, n_i, n_v, k_i)
            sch.unroll(m_i)
        sch.unroll(n_i)
        sch.reverse_compute_at(acc, tiles[-1], preserve_unit_loops=True)
        sch.parallel(sch.fuse(*tiles) if len(tiles) > 1 else tiles[0])
        sch.decompose_reduction(block, k_o)
        sch.tensorize(n_v, register_vnni_intrin())
        out = _fuse_epilogue(sch, acc, [i.block_rv for i in infos[index + 1 :]])
        if out is None:
            return None
        wb = sch.get_loops(out)
        if sch.get(wb[-1]).extent.value % LANES == 0:
            _, vec = sch.split(wb[-1], factors=[None, LANES])
            sch.vectorize(vec)
        return sch


def _fuse_epilogue(sch: s_tir.Schedule, writeback: Any, epilogue: list[Any]) -> Any:
    """`fuse_epilogue`, except that a value the epilogue reads more than once is computed
    once per tile (in its own vectorized loop) instead of inlined into each use. A QDQ
    transformer's GELU reads h = DQ(Q(acc)) twice at each of its Q/DQ levels: inlined, the
    chain was recomputed into 48 divisions per element and the kernel ran 5x the time of
    the same-sized matmul without it."""
    from tvmflow.schedules.cpu_common import schedule_spatial

    shared = [b for b in epilogue if _uses(sch, b) > 1]
    if not shared:
        return fuse_epilogue(sch, writeback, epilogue, LANES)
    remaining = []
    for block in epilogue:
        if any(block.same_as(b) for b in shared):
            remaining.append(block)
            continue
        try:
            sch.compute_inline(block)
        except ScheduleError:
            remaining.append(block)
    produced = math.prod(int(d) for d in sch.get(writeback).writes[0].source.shape)
    if any(_instances(sch, b) != produced for b in remaining):
        for block in remaining:
            schedule_spatial(sch, block, LANES)
        return writeback
    tile_loop = sch.get_loops(writeback)[0]
    for block in remaining:
        sch.reverse_compute_at(block, tile_loop, preserve_unit_loops=True)
    sch.compute_inline(writeback)
    for block in remaining[:-1]:
        inner = sch.get_loops(block)[-1]
        if sch.get(inner).extent.value % LANES == 0:
            sch.vectorize(sch.split(inner, factors=[None, LANES])[1])
    return remaining[-1]


def _uses(sch: s_tir.Schedule, block: Any) -> int:
    """How many loads of `block`'s output its consumers make (per element)."""
    import tvm
    import tvm_ffi

    buffer = sch.get(block).writes[0].source
    count = [0]

    def visit(load: Any) -> None:
        if load.source.same_as(buffer):
            count[0] += 1

    for consumer in sch.get_consumers(block):
        tvm_ffi.structural_walk(sch.get(consumer).body, [(tvm.ir.TensorLoad, visit)], order="pre")
    return count[0]


def _instances(sch: s_tir.Schedule, block: Any) -> int:
    return math.prod(int(iv.dom.extent) for iv in sch.get(block).iter_vars)
