"""CPU rule for bf16 conv2d / matmul kernels (`--precision bf16`): `vdpbf16ps` micro-kernel.

TVM has no bf16 tensor intrinsic, and its BF16 legalization turns bf16 math into fp32 math
over u16 storage, so a plainly scheduled bf16 kernel is an fp32 kernel plus conversions.
This rule tensorizes the inner product with AVX512_BF16's `vdpbf16ps` instead: 16 fp32
accumulators, each adding the dot product of a bf16 pair (`acc[i] += a0*b[i,0] + a1*b[i,1]`).
LLVM only accepts that intrinsic on `<32 x bfloat>`, which TIR cannot spell (and TIR's BF16
legalization turns bf16 values into fp32), so the intrinsic loads the operands as u16 and
passes them to a small LLVM IR helper (`_DPBF16_IR`) that bitcasts them; the helper is
linked into the kernel through the `pragma_import_llvm` loop annotation and inlined by LLVM.

The kernel is the matmul/conv register tile (`cpu_common.pick_tile`, 16-lane vectors):
rows of the output (m) x whole vectors of output channels / columns (n), reduced over a pair
dim (input channel / K, split as pairs) and any other reduction dims (kernel taps). The
constant weight is repacked at compile time as [n / tile width, other dims, pair / 2, tile
width, 2] (each dpbf16 operand one contiguous 64-byte load, a tile's operands of a reduction
step one stream); the activation is laid out pair-innermost (a pair: one 32-bit broadcast).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    PREPACK_ATTR,
    extents,
    fuse_epilogue,
    index_vars,
    is_layout_free,
    open_schedule,
    open_single_reduction,
    pick_tile,
    schedule_spatial,
    single_reduction,
    uses,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

LANES = 16  # fp32 accumulators of one vdpbf16ps
REGISTERS = 32  # zmm registers
INTRIN = "tvmflow_dpbf16ps_16x2"
HELPER = "tvmflow_dpbf16ps"
# CPUs LLVM enables AVX512_BF16 for by name (others need mattr +avx512bf16).
BF16_CPUS = frozenset(
    {"cooperlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5"}
)
# acc (16 x f32) += pairs of a (16 x i32 = 32 x bf16) and b, as LLVM's dpbf16ps wants them.
_DPBF16_IR = f"""
define internal <16 x float> @{HELPER}(<16 x float> %c, i32 %a, <32 x i16> %b) #0 {{
  %ins = insertelement <16 x i32> poison, i32 %a, i64 0
  %bcast = shufflevector <16 x i32> %ins, <16 x i32> poison, <16 x i32> zeroinitializer
  %av = bitcast <16 x i32> %bcast to <32 x bfloat>
  %bv = bitcast <32 x i16> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %c, <32 x bfloat> %av,
                                                         <32 x bfloat> %bv)
  ret <16 x float> %r
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
attributes #0 = {{ alwaysinline nounwind readnone "target-features"="+avx512bf16" }}
"""


def has_bf16(target: tvm.target.Target) -> bool:
    """Whether the target CPU has AVX512_BF16 (by name, or `+avx512bf16` in its mattr)."""
    mattr = [str(a) for a in target.attrs.get("mattr", [])]
    return str(target.attrs.get("mcpu", "")) in BF16_CPUS or "+avx512bf16" in mattr


@functools.cache
def register_intrin() -> str:
    """Register the 16x2 dpbf16 tensor intrinsic (once per process); returns its name."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "bfloat16", offset_factor=1)
        B = T.match_buffer(b, (16, 2), "bfloat16", offset_factor=1)
        C = T.match_buffer(c, (16,), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            for i, k in T.grid(16, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("float32", A[vk]) * T.Cast("float32", B[vi, vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "bfloat16", offset_factor=1)
        B = T.match_buffer(b, (16, 2), "bfloat16", offset_factor=1)
        C = T.match_buffer(c, (16,), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            # u16 views of the operands (their storage type after BF16 legalization, which
            # would turn bf16 loads into fp32 values)
            Au = T.decl_buffer((2,), "uint16", data=A.data, elem_offset=A.elem_offset)
            Bu = T.decl_buffer((32,), "uint16", data=B.data, elem_offset=B.elem_offset)
            C[T.ramp(T.int32(0), 1, 16)] = T.call_extern(
                "float32x16",
                HELPER,
                C.vload([0], "float32x16"),
                T.reinterpret("int32", Au.vload([0], "uint16x2")),
                Bu.vload([0], "uint16x32"),
            )

    TensorIntrin.register(INTRIN, desc, impl, override=True)
    return INTRIN


@dataclass(frozen=True)
class Roles:
    """A bf16 GEMM-shaped block: `out[.., m, .., n] += a[.., pair, ..] * w[.., pair, .., n]`.

    Iter positions of n (a vector of output channels / columns), m (the output dim tiled as
    rows), the pair dim (a reduction both operands index directly); which read is the weight.
    """

    n: int
    m: int
    pair: int
    weight_read: int
    out_n_dim: int  # dims of the output / data / weight that n and the pair index
    data_pair_dim: int
    w_n_dim: int
    w_pair_dim: int


def bf16_roles(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, func: Any) -> Roles | None:
    """The roles of a bf16 x bf16 -> fp32 reduction over a constant weight, else None."""
    import tvm

    stmt = sch.get(block)
    if len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    if str(stmt.writes[0].source.dtype) != "float32":
        return None
    if any(str(r.source.dtype) != "bfloat16" for r in stmt.reads):
        return None
    free = [is_layout_free(func, r.source) for r in stmt.reads]
    if free.count(True) != 1:
        return None
    w_read = free.index(True)
    data, weight = stmt.reads[1 - w_read], stmt.reads[w_read]
    w_index, d_index = index_vars(weight), index_vars(data)
    w_shape = [int(d) for d in weight.source.shape]
    if any(v is None and w_shape[d] != 1 for d, v in enumerate(w_index)):
        return None  # the repacking below maps weight dims one to one (unit dims aside)
    iters = list(stmt.iter_vars)
    position = {iv.var: i for i, iv in enumerate(iters)}
    out_index = index_vars(stmt.writes[0])
    out = [v for v in out_index if v is not None]
    channels = [v for v in out if uses(weight, v) and not uses(data, v)]
    rows = [v for v in out if uses(data, v) and not uses(weight, v)]
    if len(channels) != 1 or not rows:
        return None
    reduce = [iv.var for iv in iters if iv.iter_type == tvm.tirx.IterVar.CommReduce]
    pairs = [
        r
        for r in reduce
        if any(x is not None and x.same_as(r) for x in d_index)
        and int(iters[position[r]].dom.extent) % 2 == 0
    ]
    if not pairs or len(reduce) + 1 != sum(v is not None for v in w_index):
        return None
    n_var, m_var, pair = channels[0], rows[-1], pairs[-1]
    return Roles(
        n=position[n_var],
        m=position[m_var],
        pair=position[pair],
        weight_read=w_read,
        out_n_dim=_dim_of(out_index, n_var),
        data_pair_dim=_dim_of(d_index, pair),
        w_n_dim=_dim_of(w_index, n_var),
        w_pair_dim=_dim_of(w_index, pair),
    )


def _dim_of(index: list[Any], var: Any) -> int:
    return next(d for d, v in enumerate(index) if v is not None and v.same_as(var))


class Bf16Gemm(ScheduleRule):
    """Kernels with one bf16 conv2d / matmul block over a constant weight (see module doc)."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        if not has_bf16(target):
            return None
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        main = infos[index].block_rv
        roles = bf16_roles(sch, main, func)
        if roles is None:
            return None
        loops = list(sch.get_loops(main))
        sizes = extents(sch, loops)
        if sizes is None or sizes[roles.n] % LANES or len(loops) != len(sch.get(main).iter_vars):
            return None
        try:
            return _schedule(sch, func, main, roles, loops, sizes, infos, index)
        except (ScheduleError, InternalError):
            return None


def _schedule(
    sch: s_tir.Schedule,
    func: Any,
    main: s_tir.schedule.SBlockRV,
    roles: Roles,
    loops: list[Any],
    sizes: list[int],
    infos: list[Any],
    index: int,
) -> s_tir.Schedule | None:
    mr, nvec, _ = pick_tile(sizes[roles.m], sizes[roles.n], LANES, REGISTERS)
    _prepack(sch, main, roles, nvec * LANES)
    copy = _pair_innermost(sch, func, main, roles)
    acc = sch.cache_write(main, 0, "local")
    ndim = len(sch.get(main).writes[0].region)
    # accumulator with n innermost: whole vectors, what the intrinsic writes
    sch.transform_layout(
        main,
        ("write", 0),
        lambda *i: [*(i[d] for d in range(ndim) if d != roles.out_n_dim), i[roles.out_n_dim]],
    )
    kinds = [iv.iter_type for iv in sch.get(main).iter_vars]
    n_o, n_i, n_v = sch.split(loops[roles.n], factors=[None, nvec, LANES])
    m_o, m_i = sch.split(loops[roles.m], factors=[None, mr])
    p_o, p_i = sch.split(loops[roles.pair], factors=[None, 2])
    spatial = [i for i, k in enumerate(kinds) if k == 0 and i not in (roles.n, roles.m)]
    reduce = [p_o if i == roles.pair else loops[i] for i, k in enumerate(kinds) if k != 0]
    outer = [loops[i] for i in spatial if i < roles.n] + [n_o]
    outer += [loops[i] for i in spatial if i > roles.n] + [m_o]
    sch.reorder(*outer, *reduce, m_i, n_i, n_v, p_i)
    sch.reverse_compute_at(acc, outer[-1], preserve_unit_loops=True)
    tile = sch.fuse(*outer)
    sch.parallel(tile)
    sch.decompose_reduction(main, reduce[0])
    sch.tensorize(n_v, register_intrin())
    sch.unroll(m_i)
    sch.unroll(n_i)
    sch.annotate(tile, "pragma_import_llvm", _DPBF16_IR)
    producers = [i.block_rv for i in infos[:index]]
    for block in producers[:-1]:
        schedule_spatial(sch, block, LANES)
    for block in [*producers[-1:], *copy]:  # padding, pair layout copy: write the pair layout
        _write_pairs(sch, block)
    out = fuse_epilogue(sch, acc, [i.block_rv for i in infos[index + 1 :]], LANES)
    return None if out is None else sch


def _pair_innermost(
    sch: s_tir.Schedule, func: Any, main: s_tir.schedule.SBlockRV, roles: Roles
) -> list[s_tir.schedule.SBlockRV]:
    """Lay the activation out with its pair dim split and the pair innermost ([.., c/2, ..,
    2]), so an operand pair is one 32-bit load. An intermediate (the padded input) is simply
    written that way; a kernel parameter is copied first. Returns the copy blocks added."""
    data_read = 1 - roles.weight_read
    data = sch.get(main).reads[data_read]
    p, ndim = roles.data_pair_dim, len(data.region)
    if p == ndim - 1:
        return []
    added = []
    if any(param.same_as(data.source) for param in func.params):
        added.append(sch.cache_read(main, data_read, "global"))
    sch.transform_layout(
        main, ("read", data_read), lambda *i: [*i[:p], i[p] // 2, *i[p + 1 :], i[p] % 2]
    )
    return added


def _write_pairs(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """Schedule a block writing the pair-innermost activation ([.., c/2, .., 2]): its channel
    loop split and the pair innermost (unrolled), so each row is written contiguously (LLVM
    vectorizes the row loop into interleaving stores); the rows are shared out."""
    from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

    stmt = sch.get(block)
    loops = sch.get_loops(block)
    pair_vars = collect_vars_used_in_prim_expr(stmt.writes[0].region[-1].min)
    found = [i for i, iv in enumerate(stmt.iter_vars) if any(iv.var.same_as(v) for v in pair_vars)]
    if len(loops) != len(stmt.iter_vars) or len(found) != 1 or found[0] >= len(loops) - 1:
        schedule_spatial(sch, block, LANES)
        return
    p = found[0]
    pair_o, pair_i = sch.split(loops[p], factors=[None, 2])
    sch.reorder(*loops[p + 1 :], pair_i)
    sch.unroll(pair_i)
    tiles = [*loops[:p], pair_o, *loops[p + 1 : -1]]
    sch.parallel(sch.fuse(*tiles) if len(tiles) > 1 else tiles[0])


def _prepack(sch: s_tir.Schedule, main: s_tir.schedule.SBlockRV, roles: Roles, nr: int) -> None:
    """Repack the constant weight as [n/nr, other dims, pair/2, nr, 2] (folded at compile
    time; nr = the tile's width): each dpbf16 weight operand is one contiguous 32 x bf16
    load, and a tile's operands of one reduction step are one contiguous stream."""
    cache = sch.cache_read(main, roles.weight_read, "global")
    ndim = len(sch.get(cache).writes[0].region)
    n, p = roles.w_n_dim, roles.w_pair_dim

    def index_map(*i: Any) -> list[Any]:
        rest = [i[d] for d in range(ndim) if d not in (n, p)]
        return [i[n] // nr, *rest, i[p] // 2, i[n] % nr, i[p] % 2]

    sch.transform_layout(cache, ("write", 0), index_map)
    sch.annotate(cache, PREPACK_ATTR, True)


# dpbf16 with the pairs taken from two rows of 16 (two input channel planes, NCHW): the
# rows are interleaved into one 32 x bf16 operand, the weight pair is broadcast.
PLANES_INTRIN = "tvmflow_dpbf16ps_planes_16x2"
PLANES_HELPER = "tvmflow_dpbf16ps_planes"
_DPBF16_PLANES_IR = f"""
define internal <16 x float> @{PLANES_HELPER}(<16 x float> %c, i32 %a, <16 x i16> %r0,
                                              <16 x i16> %r1) #0 {{
  %ins = insertelement <16 x i32> poison, i32 %a, i64 0
  %bcast = shufflevector <16 x i32> %ins, <16 x i32> poison, <16 x i32> zeroinitializer
  %av = bitcast <16 x i32> %bcast to <32 x bfloat>
  %b = shufflevector <16 x i16> %r0, <16 x i16> %r1, <32 x i32> <i32 0, i32 16, i32 1, i32 17,
    i32 2, i32 18, i32 3, i32 19, i32 4, i32 20, i32 5, i32 21, i32 6, i32 22, i32 7, i32 23,
    i32 8, i32 24, i32 9, i32 25, i32 10, i32 26, i32 11, i32 27, i32 12, i32 28, i32 13,
    i32 29, i32 14, i32 30, i32 15, i32 31>
  %bv = bitcast <32 x i16> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %c, <32 x bfloat> %bv,
                                                         <32 x bfloat> %av)
  ret <16 x float> %r
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
attributes #0 = {{ alwaysinline nounwind readnone "target-features"="+avx512bf16" }}
"""


@functools.cache
def register_planes_intrin() -> str:
    """Register the planes variant: acc[16] += w[0] * x[0, 0:16] + w[1] * x[1, 0:16]."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "bfloat16", offset_factor=1)
        B = T.match_buffer(b, (2, 16), "bfloat16", offset_factor=1, strides=[T.int32(), 1])
        C = T.match_buffer(c, (16,), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:16], B[0:2, 0:16], A[0:2])
            T.writes(C[0:16])
            for i, k in T.grid(16, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("float32", B[vk, vi]) * T.Cast("float32", A[vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        stride = T.int32()
        A = T.match_buffer(a, (2,), "bfloat16", offset_factor=1)
        B = T.match_buffer(b, (2, 16), "bfloat16", offset_factor=1, strides=[stride, 1])
        C = T.match_buffer(c, (16,), "float32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:16], B[0:2, 0:16], A[0:2])
            T.writes(C[0:16])
            Au = T.decl_buffer((2,), "uint16", data=A.data, elem_offset=A.elem_offset)
            Bu = T.decl_buffer(
                (2, 16), "uint16", data=B.data, elem_offset=B.elem_offset, strides=[stride, 1]
            )
            C[T.ramp(T.int32(0), 1, 16)] = T.call_extern(
                "float32x16",
                PLANES_HELPER,
                C.vload([0], "float32x16"),
                T.reinterpret("int32", Au.vload([0], "uint16x2")),
                Bu.vload([0, 0], "uint16x16"),
                Bu.vload([1, 0], "uint16x16"),
            )

    TensorIntrin.register(PLANES_INTRIN, desc, impl, override=True)
    return PLANES_INTRIN


class Bf16PointwiseConv2d(ScheduleRule):
    """bf16 1x1 stride-1 unpadded convs over NCHW planes of whole vectors: the register tile
    is (output channels x vectors of the plane), as `PointwiseConv2d`'s in fp32, so output
    rows are written whole; each dpbf16 interleaves a vector of two input planes (reused by
    every output channel of the tile) and broadcasts a weight pair."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        if not has_bf16(target):
            return None
        try:
            return _schedule_planes(func, target)
        except (ScheduleError, InternalError, ValueError):
            return None


# Accumulators + interleaved operands of a planes tile (AVX-512), as `PointwiseConv2d`'s.
_PLANES_BUDGET = 22


def planes_tile(channels: int, plane_vectors: int) -> tuple[int, int] | None:
    """(output channels, plane vectors) of a planes tile: the most channels first, as each
    interleaved operand (a shuffle) is reused by every channel of the tile (24 -> 144 at
    56x56, 1 thread: 8 x 2 0.098 ms, 4 x 4 0.100, 2 x 7 0.139, fp32 `PointwiseConv2d` 0.126)."""
    for rows in range(8, 0, -1):
        if channels % rows:
            continue
        for nvec in (4, 3, 2, 1):
            if plane_vectors % nvec == 0 and rows * nvec + nvec <= _PLANES_BUDGET:
                return rows, nvec
    return None


def planes_fit(channels: int, inputs: int, plane: int) -> tuple[int, int] | None:
    """The planes tile of a bf16 1x1 conv (`channels` outputs, `inputs` channels in, a
    `plane` of rows x columns), or None where `Bf16PointwiseConv2d` leaves it: an odd input
    count (dpbf16 pairs input channels), a plane fp32 `PointwiseConv2d` would not run
    either, a panel beyond L1. The output channel count needs no vector multiple here."""
    from tvmflow.schedules.cpu_pointwise_conv2d import MAX_PANEL_BYTES, pointwise_tile

    if inputs % 2 or pointwise_tile(channels, plane, inputs * 4, LANES, REGISTERS) is None:
        return None
    tile = planes_tile(channels, plane // LANES)
    if tile is None or inputs * 2 * tile[1] * LANES > MAX_PANEL_BYTES:
        return None
    return tile


def _schedule_planes(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    from tvmflow.schedules.cpu_conv2d import conv_roles
    from tvmflow.schedules.cpu_pointwise_conv2d import (
        _fuse_plane,
        _inline_copy,
        _nchw_roles,
        _unit_stride,
    )

    opened = open_schedule(func, target)
    if opened is None:
        return None
    sch, infos = opened
    index = single_reduction(infos)
    if index is None or index > 1:
        return None
    main = infos[index].block_rv
    stmt = sch.get(main)
    if str(stmt.writes[0].source.dtype) != "float32" or len(stmt.reads) != 2:
        return None
    if any(str(r.source.dtype) != "bfloat16" for r in stmt.reads):
        return None
    roles = conv_roles(sch, main, lambda buf: is_layout_free(func, buf))
    if roles is None or not _nchw_roles(roles) or not _unit_stride(sch, main, roles):
        return None
    if not is_layout_free(func, stmt.reads[roles["weight_read"]].source):
        return None
    sizes = extents(sch, sch.get_loops(main))
    if sizes is None or any(sizes[i] != 1 for i in roles["reduce"][1:]):
        return None
    inputs = sizes[roles["reduce"][0]]
    spatial = tuple(sizes[: roles["m"] + 1])  # [batch], channels, height, width
    # the convs fp32 `PointwiseConv2d` runs (`tvmflow.bf16` sends them here)
    tile = planes_fit(spatial[-3], inputs, spatial[-2] * spatial[-1])
    if tile is None:
        return None
    if index == 1 and not _inline_copy(sch, infos[0].block_rv):
        return None
    epilogue = [i.block_rv for i in infos[index + 1 :]]
    if any(p.same_as(sch.get(main).writes[0].source) for p in func.params):
        epilogue.insert(0, sch.cache_write(main, 0, "global"))
    _fuse_plane(sch, main, epilogue, spatial)
    # the input as [.., channel, row * width + column]: a vector of 16 never crosses rows
    data_read = 1 - roles["weight_read"]
    copy = sch.cache_read(main, data_read, "global")
    width = spatial[-1]
    sch.transform_layout(main, ("read", data_read), lambda *i: [*i[:-2], i[-2] * width + i[-1]])
    mr, nvec = tile
    _prepack_planes(sch, main, roles, mr)
    nb = len(roles["batch"])
    loops = sch.get_loops(main)  # [batch], channel, p, reduction, unit taps
    channel, plane, reduce = loops[nb], loops[nb + 1], loops[nb + 2]
    k_o, k_i = sch.split(channel, factors=[None, mr])
    p_o, p_i, p_v = sch.split(plane, factors=[None, nvec, LANES])
    c_o, c_i = sch.split(reduce, factors=[None, 2])
    sch.reorder(*loops[:nb], k_o, p_o, c_o, *loops[nb + 3 :], k_i, p_i, p_v, c_i)
    acc = sch.cache_write(main, 0, "local")
    sch.reverse_compute_at(acc, p_o, preserve_unit_loops=True)
    tiles = [*loops[:nb], k_o, p_o]
    tile_loop = sch.fuse(*tiles) if len(tiles) > 1 else tiles[0]
    sch.parallel(tile_loop)
    sch.decompose_reduction(main, c_o)
    sch.tensorize(p_v, register_planes_intrin())
    sch.unroll(k_i)
    sch.unroll(p_i)
    sch.annotate(tile_loop, "pragma_import_llvm", _DPBF16_PLANES_IR)
    schedule_spatial(sch, copy, LANES)
    out = fuse_epilogue(sch, acc, epilogue, LANES)
    if out is None:
        return None
    column = sch.get_loops(out)[-1]
    if extents(sch, [column]) == [nvec * LANES]:
        sch.vectorize(sch.split(column, factors=[None, LANES])[1])
    return sch


def _prepack_planes(
    sch: s_tir.Schedule, main: s_tir.schedule.SBlockRV, roles: dict[str, Any], mr: int
) -> None:
    """Repack the 1x1 weight ([1, 1, in, out] HWIO) as [out / mr, in / 2, mr, 2]: a tile's
    weight pairs of one reduction step are one contiguous run (folded at compile time)."""
    cache = sch.cache_read(main, roles["weight_read"], "global")
    region = sch.get(cache).writes[0].region
    ndim = len(region)
    n, c = roles["weight_n_dim"], roles["weight_order"][0]

    def index_map(*i: Any) -> list[Any]:
        rest = [i[d] for d in range(ndim) if d not in (n, c)]
        return [i[n] // mr, *rest, i[c] // 2, i[n] % mr, i[c] % 2]

    sch.transform_layout(cache, ("write", 0), index_map)
    sch.annotate(cache, PREPACK_ATTR, True)
