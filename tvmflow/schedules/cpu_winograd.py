"""CPU rules for the three kernels of a Winograd conv (`tvmflow.winograd`).

- `WinogradGemm`: M[e, p, k] = sum_c V[e, p, c] * U[e, c, k], one GEMM per tile position e,
  on the register-tiled micro-kernel of the other GEMM rules (`tile_gemm`), vectorized over
  the output channel k. U (a constant) is repacked per e as [e, k / nr, c, nr] at compile
  time, so each GEMM streams its weight panel contiguously. The tile is a tuning knob.
- `WinogradDataPack` (input transform) and `WinogradInverse` (output transform with the
  fused bias / activation / residual epilogue): the tile position loops are unrolled, which
  folds the per-position coefficient Selects to one sum each, and the channel loop is
  vectorized (the transformed tensors keep channels innermost).

Each claims only its own kernel, found by the block names the lowering pass gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    PREPACK_ATTR,
    GemmLoops,
    TiledRule,
    extents,
    is_layout_free,
    open_schedule,
    open_single_reduction,
    pick_vector,
    schedule_spatial,
    tile_choices,
    tile_gemm,
    vector_lanes,
    vector_registers,
)
from tvmflow.winograd import DATA_PACK, GEMM, INVERSE

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir


def _named(sch: s_tir.Schedule, block: Any, prefix: str) -> bool:
    return str(sch.get(block).name_hint).startswith(prefix)


class WinogradGemm(TiledRule):
    """The batched GEMM of a Winograd conv (see the module docstring)."""

    def _schedule(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, choice: int, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        block = infos[index].block_rv
        if len(infos) != 1 or not _named(sch, block, GEMM):
            return None
        loops = sch.get_loops(block)
        sizes = extents(sch, loops)
        if sizes is None or len(sizes) != 4:
            return None
        _, tiles, channels, _ = sizes
        lanes = vector_lanes(target)
        options = tile_choices(tiles, channels, lanes, vector_registers(target))
        if choice >= len(options):
            return None
        tile = options[choice]
        weight = sch.get(block).reads[1].source
        if is_layout_free(func, weight):
            nr = tile[1] * tile[2]
            cache = sch.cache_read(block, 1, "global")
            sch.transform_layout(cache, ("write", 0), lambda e, c, k: [e, k // nr, c, k % nr])
            sch.annotate(cache, PREPACK_ATTR, True)
        e, p, k, c = loops
        tile_gemm(sch, block, GemmLoops(batch=(e,), rows=(), m=p, n=k, reduce=(c,)), tile, tunable)
        return sch


class WinogradDataPack(ScheduleRule):
    """The input transform: the channels-last staging copy as a plain parallel, vectorized
    pass, then the transform per tile and channel vector, unrolled over the tile position."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_schedule(func, target)
        if opened is None:
            return None
        sch, infos = opened
        if len(infos) != 2 or not _named(sch, infos[1].block_rv, DATA_PACK):
            return None
        stage, block = infos[0].block_rv, infos[1].block_rv
        loops = sch.get_loops(block)
        sizes = extents(sch, loops)
        if sizes is None or len(sizes) != 3:
            return None
        lanes = vector_lanes(target)
        e, p, c = loops
        v = pick_vector(sizes[2], lanes)
        c_o, c_i = sch.split(c, factors=[None, v])
        sch.reorder(p, c_o, e, c_i)
        sch.unroll(e)
        if v > 1:
            sch.vectorize(c_i)
        sch.parallel(sch.fuse(p, c_o))
        schedule_spatial(sch, stage, lanes)
        return sch


class WinogradInverse(ScheduleRule):
    """The output transform and its fused epilogue: per output tile, unrolled over the
    tile's rows and columns, vectorized over output channels."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_schedule(func, target)
        if opened is None:
            return None
        sch, infos = opened
        if not infos or not _named(sch, infos[0].block_rv, INVERSE):
            return None
        if not all(info.is_injective() for info in infos):
            return None
        block = infos[0].block_rv
        m = _tile_size(sch, block)
        lanes = vector_lanes(target)
        epilogue = [info.block_rv for info in infos[1:]]
        try:
            rest = _inline_epilogue(sch, epilogue)
            loops = sch.get_loops(block)
            sizes = extents(sch, loops)
            if sizes is None or len(sizes) not in (3, 4) or m is None:
                return None
            # (n,) k, h, w: normalization drops a batch loop of extent 1
            *batch, k, h, w = loops
            v = pick_vector(sizes[-3], lanes)
            th, i = sch.split(h, factors=[None, m])
            tw, j = sch.split(w, factors=[None, m])
            k_o, k_i = sch.split(k, factors=[None, v])
            sch.reorder(*batch, th, tw, k_o, i, j, k_i)
            sch.unroll(i)
            sch.unroll(j)
            if v > 1:
                sch.vectorize(k_i)
            sch.parallel(sch.fuse(*batch, th, tw))
            for other in rest:
                schedule_spatial(sch, other, lanes)
        except (ScheduleError, InternalError):
            return None
        return sch


def _tile_size(sch: s_tir.Schedule, block: Any) -> int | None:
    """m of F(m, 3): the output transform reads M[e, ...] with e over (m + 2)^2 positions."""
    import math

    shape = sch.get(block).reads[0].source.shape
    alpha = math.isqrt(int(shape[0]))
    return alpha - 2 if alpha * alpha == int(shape[0]) and alpha > 2 else None


def _inline_epilogue(sch: s_tir.Schedule, epilogue: list[Any]) -> list[Any]:
    """Fold elementwise consumers into the transform's block (each output written once);
    returns the blocks that would not fold, left to run as their own passes."""
    rest = []
    for block in epilogue:
        try:
            sch.reverse_compute_inline(block)
        except (ScheduleError, InternalError):
            rest.append(block)
    return rest
