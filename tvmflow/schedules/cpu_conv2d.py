"""CPU rule for conv2d kernels (NCHW activations, HWIO weights) with fused epilogues.

`passes.fuse` hands conv2d its weights as HWIO, so the output channel is the contiguous dim
of the weight: the convolution is then a GEMM (implicit im2col) with n = output channel,
m = output column, k = (input channel, kernel row, kernel column), and gets the same
register-tiled micro-kernel as matmul. The accumulator tile is kept channel-innermost so
it is whole vectors; the NCHW output is written from it once per tile, with the epilogue
(bias, residual add, activation) applied on the way out. Depthwise/grouped convs, whose
input also depends on the output channel, are left to other rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    GemmLoops,
    dtype_bits_of_block,
    extents,
    fuse_epilogue,
    index_vars,
    is_cpu,
    is_layout_free,
    pick_tile,
    prepack_weight,
    schedule_spatial,
    tile_gemm,
    uses,
    vector_lanes,
    vector_registers,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir


def conv_roles(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> dict[str, Any] | None:
    """Iter positions of a conv block by GEMM role, or None when it is not GEMM-shaped."""
    import tvm

    stmt = sch.get(block)
    iters = list(stmt.iter_vars)
    kinds = "".join("R" if iv.iter_type == tvm.tirx.IterVar.CommReduce else "S" for iv in iters)
    if "R" not in kinds or "S" in kinds[kinds.index("R") :]:
        return None
    if len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    out_index = index_vars(stmt.writes[0])
    out = [v for v in out_index if v is not None]
    if len(out) < 2:
        return None
    m_var = out[-1]
    data, weight = stmt.reads
    weight_read = 1
    if uses(weight, m_var):
        data, weight = weight, data
        weight_read = 0
    if not uses(data, m_var) or uses(weight, m_var):
        return None
    weight_index = index_vars(weight)
    n_var = weight_index[-1]
    if n_var is None:
        return None
    # the input must not depend on the output channel (depthwise/grouped convs do)
    if not uses(out, n_var) or uses(data, n_var):
        return None
    position = {iv.var: i for i, iv in enumerate(iters)}
    reduce = [i for i, k in enumerate(kinds) if k == "R"]
    if any(_dim_of(weight_index, iters[i].var) == len(weight_index) for i in reduce):
        return None  # a reduction var not indexing the weight directly: not a plain conv
    n_at = next(i for i, v in enumerate(out) if v.same_as(n_var))
    return {
        "batch": [position[v] for v in out[:n_at]],
        "rows": [position[v] for v in out[n_at + 1 : -1]],
        "m": position[m_var],
        "n": position[n_var],
        "reduce": reduce,
        "weight_read": weight_read,
        # a prepacked weight is laid out in the order the reduction loops walk it
        "weight_order": [_dim_of(weight_index, iters[i].var) for i in reduce],
        "weight_n_dim": len(weight_index) - 1,
        "n_dim": next(i for i, v in enumerate(out_index) if v is not None and v.same_as(n_var)),
        "ndim": len(out_index),
    }


def _dim_of(index: list[Any], var: Any) -> int:
    return next((d for d, x in enumerate(index) if x is not None and x.same_as(var)), len(index))


class Conv2d(ScheduleRule):  # type: ignore[misc]
    """Kernels with one GEMM-shaped convolution block; producers (pad) and epilogues injective."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        import tvm
        from tvm import s_tir
        from tvm.s_tir.dlight.analysis import normalize_prim_func

        if not isinstance(func, tvm.tirx.PrimFunc) or not is_cpu(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos:
            return None
        reductions = [i for i, info in enumerate(infos) if not info.is_injective()]
        if len(reductions) != 1:
            return None
        main = infos[reductions[0]]
        roles = conv_roles(sch, main.block_rv)
        if roles is None or roles["m"] is None:
            return None
        loops = [it.loop_rv for it in main.iters]
        sizes = extents(sch, loops)
        if sizes is None:
            return None
        lanes = vector_lanes(target, dtype_bits_of_block(sch, main.block_rv))
        tile = pick_tile(sizes[roles["m"]], sizes[roles["n"]], lanes, vector_registers(target))
        gemm = GemmLoops(
            batch=tuple(loops[i] for i in roles["batch"]),
            rows=tuple(loops[i] for i in roles["rows"]),
            m=loops[roles["m"]],
            n=loops[roles["n"]],
            reduce=tuple(loops[i] for i in roles["reduce"]),
        )
        weight = sch.get(main.block_rv).reads[roles["weight_read"]].source
        if is_layout_free(func, weight):
            prepack_weight(
                sch,
                main.block_rv,
                roles["weight_read"],
                roles["weight_order"],
                roles["weight_n_dim"],
                tile[1] * tile[2],
            )
        writeback = tile_gemm(sch, main.block_rv, gemm, tile)
        # accumulator with the channel innermost: whole vectors, promotable to registers
        n_dim, ndim = roles["n_dim"], roles["ndim"]
        sch.transform_layout(
            main.block_rv,
            ("write", 0),
            lambda *idx: [*(idx[i] for i in range(ndim) if i != n_dim), idx[n_dim]],
        )
        if fuse_epilogue(sch, writeback, [i.block_rv for i in infos[reductions[0] + 1 :]]) is None:
            return None
        for info in infos[: reductions[0]]:
            _schedule_producer(sch, info.block_rv, lanes)
        return sch


def _schedule_producer(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Inline a plain copy into the conv; materialize padding (a branch per load costs more)."""
    import tvm

    has_branch = tvm.get_global_func("s_tir.schedule.HasIfThenElse")(sch.get(block))
    if not has_branch:
        try:
            sch.compute_inline(block)
            return
        except (ScheduleError, InternalError):
            pass
    schedule_spatial(sch, block, lanes)
