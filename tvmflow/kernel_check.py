"""Never ship a kernel one of tvmflow's own schedule rules got wrong.

Every kernel a tvmflow rule schedules is run, at compile time, next to the same kernel under
a trusted reference schedule (the unscheduled TIR, its leading spatial loops parallel) on
seeded data: the model's real constants where the kernel is called with them, random values
elsewhere. Outputs and the scheduled kernel's global scratch buffers (lifted to arguments so
they can be filled) are poisoned before each run, with NaN and then with a large finite
value, so a read of memory the kernel never wrote shows as a mismatch instead of depending
on what the allocator hands back. A kernel that disagrees, fails to build or crashes the rule
falls back to the reference schedule, with one log line naming the rule and the kernel.

All checks build as one module (one LLVM run); targets this host cannot run are checked with
the host's own LLVM target (the schedule's logic is the same TIR).
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir.dlight import ScheduleRule

log = logging.getLogger(__name__)

# Poisons for buffers the kernel should write before it reads them: run 1, run 2.
_FLOAT_POISONS = (np.nan, 1.0e6)
# A partial reference runs once per poison: a value both runs agree on read no poison (NaN
# would not do: max(NaN, 0) is 0). A full reference runs once, with the first.
_REF_POISONS = (1.0e6, -1.0e6)
# Loop iterations of one reduction block a check's reference runs in full (a 3x3 conv
# 64->64 at 56x56 is 1.2e8; at -O0 a few million iterations take milliseconds).
REFERENCE_WORK_CAP = 2_000_000
_PARTIAL = "tvmflow.partial_reference"
# Scheduled vs reference: reordered float sums differ by rounding only.
_RTOL = 1e-3
_ATOL_OF_SCALE = 1e-4
# bf16 outputs (`--precision bf16`): a reordered sum can round to the neighbouring bf16
# value (8 significant bits: 2^-8 apart), so two units of that are rounding too.
_BF16_RTOL = 2.0**-7
# fp16 outputs: TVM's fp16 kernels keep a reduction's running sum in fp16, rounded to 11
# bits at every step, so the order of the sum shows: distilbert's fp16 softmax rows of 64
# differ by up to 4 units (3e-3) between the serial reference and a vectorized schedule.
# Held to what the accuracy check allows an fp16 model (tvmflow.accuracy.FP16_TOLERANCE).
_FP16_RTOL = 1e-2
_NARROW_RTOL = {"bfloat16": _BF16_RTOL, "float16": _FP16_RTOL}


def _is_float(dtype: np.dtype) -> bool:
    """Floats, and bfloat16 (ml_dtypes: numpy kind 'V')."""
    return dtype.kind == "f" or dtype.name == "bfloat16"


@dataclass(frozen=True)
class RuleKernel:
    """One kernel as a rule scheduled it, with the unscheduled original."""

    name: str
    rule: str
    original: tvm.tirx.PrimFunc
    scheduled: tvm.tirx.PrimFunc


@dataclass(frozen=True)
class Rejected:
    """A rule's schedule that is not used, and why."""

    name: str
    rule: str
    reason: str

    def line(self, instead: str = "the reference schedule") -> str:
        return (
            f"kernel check: {self.rule} mis-scheduled kernel {self.name} "
            f"({self.reason}); using {instead} for it"
        )


def schedule_checked(
    mod: tvm.IRModule, target: tvm.target.Target, rules: Sequence[ScheduleRule], seed: int = 0
) -> tvm.IRModule:
    """Schedule every still-unscheduled kernel with the first applicable rule (DLight's
    ApplyDefaultSchedule, but each result is checked and a bad one replaced)."""
    start = time.perf_counter()
    kernels, rejected = apply_rules(mod, target, rules)
    for kernel in [k for k in kernels if not checkable(k.original)]:
        # Data-dependent shapes (NonZero, NonMaxSuppression): no data to run it on here.
        kernels.remove(kernel)
        mod[kernel.name] = _as_scheduled(reference(kernel.original))
        log.debug("kernel check: %s has symbolic shapes; reference schedule", kernel.name)
    rejected += check(kernels, target, call_constants(mod), seed)
    bad = {r.name for r in rejected}
    for kernel in kernels:
        if kernel.name not in bad:
            mod[kernel.name] = _as_scheduled(kernel.scheduled)
    for r in rejected:
        mod[r.name] = _as_scheduled(reference(mod[r.name]))
        log.warning(r.line())
    log.debug("kernel check: %d kernels in %.2fs", len(kernels), time.perf_counter() - start)
    return mod


def check_tuned(
    before: tvm.IRModule, after: tvm.IRModule, target: tvm.target.Target, seed: int = 0
) -> tuple[tvm.IRModule, int]:
    """Check the kernels tuning records scheduled (`before` -> `after`); a bad one goes back
    to unscheduled, so the (checked) default rules take it. Returns the module and how many
    records were dropped. CPU targets only: GPU kernels cannot run on this host's LLVM."""
    import tvm

    if str(target.kind.name) != "llvm":
        return after, 0
    kernels = [
        RuleKernel(gv.name_hint, "tuning record", before[gv.name_hint], func)
        for gv, func in after.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc)
        and _is_scheduled(func)
        and not before[gv.name_hint].same_as(func)
        and checkable(before[gv.name_hint])
    ]
    rejected = check(kernels, target, call_constants(after), seed)
    for r in rejected:
        after[r.name] = before[r.name]
        log.warning(r.line("the default rules"))
    return after, len(rejected)


def apply_rules(
    mod: tvm.IRModule, target: tvm.target.Target, rules: Sequence[ScheduleRule]
) -> tuple[list[RuleKernel], list[Rejected]]:
    """The first rule that applies to each unscheduled kernel, and the rules that raised."""
    import tvm

    kernels: list[RuleKernel] = []
    crashed: list[Rejected] = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or _is_scheduled(func):
            continue
        for rule in rules:
            name = f"rule {type(rule).__name__}"
            try:
                sch = rule.apply(func, target, False)
            except Exception as exc:  # a rule bug must not fail the compile
                crashed.append(Rejected(gv.name_hint, name, f"raised {type(exc).__name__}"))
                break
            if sch is None:
                continue
            scheduled = sch[0] if isinstance(sch, list) else sch
            kernels.append(RuleKernel(gv.name_hint, name, func, scheduled.mod["main"]))
            break
    return kernels, crashed


def check(
    kernels: Sequence[RuleKernel],
    target: tvm.target.Target,
    constants: Mapping[str, Sequence[np.ndarray | None]] | None = None,
    seed: int = 0,
) -> list[Rejected]:
    """The kernels whose scheduled version disagrees with (or cannot be built next to) the
    reference; `constants` gives a kernel's argument values where the model fixes them."""
    run_target = runnable_target(target)
    keyed = {_key(k, run_target, (constants or {}).get(k.name), seed): k for k in kernels}
    todo = [(key, k) for key, k in keyed.items() if key not in _PASSED]
    if not todo:
        return []
    cases = [_Case.of(k) for _, k in todo]
    lib, unbuildable = _build(cases, run_target)
    rejected = [Rejected(c.kernel.name, c.kernel.rule, why) for c, why in unbuildable]
    failed = {c.kernel.name for c, _ in unbuildable}
    for i, ((key, _), case) in enumerate(zip(todo, cases, strict=True)):
        if case.kernel.name in failed:
            continue
        args = _arguments(case.kernel.original, (constants or {}).get(case.kernel.name), seed)
        why = case.compare(lib[i], args)
        if why is not None:
            rejected.append(Rejected(case.kernel.name, case.kernel.rule, why))
        else:
            _PASSED.add(key)
    return rejected


# Checks passed in this process (a test session, or `tune` then `compile`, meets the same
# kernels again): keyed by both functions, the target and the data.
_PASSED: set[tuple[int, int, str, str]] = set()


def _key(
    kernel: RuleKernel,
    target: tvm.target.Target,
    constants: Sequence[np.ndarray | None] | None,
    seed: int,
) -> tuple[int, int, str, str]:
    import hashlib

    import tvm_ffi

    digest = hashlib.blake2b(str(seed).encode(), digest_size=16)
    for array in constants or ():
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    return (
        tvm_ffi.structural_hash(kernel.original),
        tvm_ffi.structural_hash(kernel.scheduled),
        str(target),
        digest.hexdigest(),
    )


def checkable(func: tvm.tirx.PrimFunc) -> bool:
    """Whether every parameter is a buffer of static shape (the check draws data of those
    shapes; a scalar parameter is a run-time dim, which it has no value for)."""
    return all(hasattr(p, "shape") and _static(p.shape) for p in func.params)


def runnable_target(target: tvm.target.Target) -> tvm.target.Target:
    """`target` if this host runs its code, else the host's plain LLVM target; without LLVM
    optimization either way (what is checked is the schedule, and -O0 builds 3x faster)."""
    import tvm

    from tvmflow.schedules.cpu_common import vector_bits
    from tvmflow.schedules.cpu_int8_matmul import has_vnni
    from tvmflow.targets import host_arch, host_cpu_features

    triple = str(target.attrs.get("mtriple", ""))
    features = host_cpu_features()
    bits = vector_bits(target)
    runs = (
        (not triple or triple.startswith(host_arch()))
        and (bits < 512 or "avx512f" in features)
        and (bits < 256 or "avx2" in features or host_arch() != "x86_64")
        and (not has_vnni(target) or "avx512_vnni" in features)
    )
    base = dict(target.export()) if runs else {"kind": "llvm"}
    return tvm.target.Target({**base, "opt-level": 0})


def reference(func: tvm.tirx.PrimFunc, work_cap: int | None = None) -> tvm.tirx.PrimFunc:
    """The trusted schedule: the compute definition as written, each block's leading
    spatial loops fused and parallel (s_tir checks that is legal; if not, left serial).

    With `work_cap`, a reduction block of more loop iterations than that runs only the
    first part of its fused spatial loop, and the blocks after it the same share of theirs
    (a check's reference for a large conv or matmul: the naive loop nest would cost more
    than the compile); `check` then compares only the values that part determines.
    """
    import tvm
    import tvm_ffi
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    cut: dict[Any, int] = {}
    fraction = 1.0  # of a cut reduction's spatial loop; its epilogues run the same share
    for block in _blocks(sch):
        try:
            stmt = sch.get(block)
            loops = sch.get_loops(block)
            kinds = [iv.iter_type == tvm.tirx.IterVar.DataPar for iv in stmt.iter_vars]
            spatial = kinds.index(False) if False in kinds else len(kinds)
            leading = loops[: min(spatial, len(loops))]
            if not leading or len(loops) != len(stmt.iter_vars):
                continue
            sizes = [sch.get(loop).extent for loop in loops]
            fused = sch.fuse(*leading) if len(leading) > 1 else leading[0]
            sch.parallel(fused)
            if work_cap is None or not _static(sizes):
                continue
            extent = int(sch.get(fused).extent)
            work = math.prod(int(e) for e in sizes)
            if not all(kinds) and work > work_cap:
                fraction = min(fraction, work_cap / work)
            elif not all(kinds) or fraction == 1.0:
                continue  # producers (pads) run whole: every output reads them
            cut[sch.get(fused).loop_var] = max(1, math.ceil(extent * fraction))
        except (s_tir.schedule.ScheduleError, tvm.error.InternalError):
            continue
    ref = sch.mod["main"]
    if not cut:
        return ref

    def truncate(loop: tvm.tirx.For) -> tvm.tirx.For:
        new = next((n for var, n in cut.items() if var.same_as(loop.loop_var)), None)
        if new is None:
            return loop
        return tvm.tirx.For(
            loop.loop_var,
            loop.min,
            tvm.tirx.IntImm(str(loop.extent.ty), new),
            loop.kind,
            loop.body,
            loop.thread_binding,
            loop.annotations,
        )

    body = tvm_ffi.structural_map(ref.body, [(tvm.tirx.For, truncate)])
    return ref.with_body(body).with_attr(_PARTIAL, True)


def call_constants(mod: tvm.IRModule) -> dict[str, list[np.ndarray | None]]:
    """Per kernel, the constant each argument is bound to at its first call (None: computed)."""
    import tvm
    from tvm import relax

    found: dict[str, list[np.ndarray | None]] = {}
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        for binding in _bindings(func.body):
            call = binding.value
            if not _is_call_tir(call) or not isinstance(call.args[1], relax.Tuple):
                continue
            found.setdefault(
                call.args[0].name_hint,
                [
                    a.value.numpy() if isinstance(a, tvm.ir.expr.Constant) else None
                    for a in call.args[1].fields
                ],
            )
    return found


@dataclass(frozen=True)
class _Case:
    """One kernel's check: reference and scheduled functions (global scratch lifted to
    arguments in both), and where the outputs are."""

    kernel: RuleKernel
    reference: tvm.tirx.PrimFunc
    ref_scratch: tuple[tuple[tuple[int, ...], str], ...]
    lifted: tvm.tirx.PrimFunc
    scratch: tuple[tuple[tuple[int, ...], str], ...]
    outputs: tuple[int, ...]
    rtol: float

    @staticmethod
    def of(kernel: RuleKernel) -> _Case:
        ref, ref_scratch = _lift_scratch(reference(kernel.original, REFERENCE_WORK_CAP))
        lifted, scratch = _lift_scratch(kernel.scheduled)
        written = _written(kernel.original)
        return _Case(kernel, ref, ref_scratch, lifted, scratch, written, _rtol(kernel.original))

    @property
    def partial(self) -> bool:
        return bool(self.reference.attrs and self.reference.attrs.get(_PARTIAL))

    def compare(self, funcs: tuple[Any, Any], args: list[np.ndarray]) -> str | None:
        """Why the scheduled kernel disagrees with the reference, or None.

        A partial reference runs once per poison: only values all runs agree on are
        values it computed (a value read from poison differs between poisons), and only
        those are compared."""
        import tvm

        ref_func, sch_func = funcs
        dev = tvm.cpu(0)
        ref_poisons = _REF_POISONS if self.partial else _REF_POISONS[:1]
        try:
            refs = [
                _call(ref_func, args, self.outputs, self.ref_scratch, poison, dev)
                for poison in ref_poisons
            ]
            runs = [
                _call(sch_func, args, self.outputs, self.scratch, poison, dev)
                for poison in _FLOAT_POISONS
            ]
        except Exception as exc:  # a kernel that traps in its own checks
            return f"run failed: {type(exc).__name__}: {str(exc).strip()[:120]}"
        for index in range(len(self.outputs)):
            first, second = runs[0][index], runs[1][index]
            unstable = int(np.count_nonzero(~_same(first, second)))
            if unstable:
                return (
                    f"output {index}: {unstable} of {first.size} values depend on what memory "
                    "held before the run: never written, or read before written"
                )
            expected = refs[0][index]
            known = np.ones(expected.shape, bool)
            for other in refs[1:]:
                known &= _same(expected, other[index])
            bad = _mismatches(expected[known], first[known], self.rtol)
            if bad:
                return (
                    f"output {index}: {bad} of {int(known.sum())} values checked differ from "
                    "the reference"
                )
        return None


def _build(
    cases: Sequence[_Case], target: tvm.target.Target
) -> tuple[list[tuple[Any, Any]], list[tuple[_Case, str]]]:
    """Build every case in one module; if that fails, find the cases that break it."""
    import tvm

    def module(items: Sequence[tuple[int, _Case]]) -> tvm.IRModule:
        funcs = {}
        for i, case in items:
            funcs[f"tvmflow_ref_{i}"] = _exported(case.reference, f"tvmflow_ref_{i}")
            funcs[f"tvmflow_sch_{i}"] = _exported(case.lifted, f"tvmflow_sch_{i}")
        return tvm.IRModule(funcs)

    def functions(lib: Any, i: int) -> tuple[Any, Any]:
        return lib[f"tvmflow_ref_{i}"], lib[f"tvmflow_sch_{i}"]

    items = list(enumerate(cases))
    with tempfile.TemporaryDirectory(prefix="tvmflow-kernel-check-") as scratch:
        try:
            lib = _load(module(items), target, Path(scratch) / "all.so")
            return [functions(lib, i) for i, _ in items], []
        except Exception:  # isolate the kernel(s) that do not build
            pass
        built: list[tuple[Any, Any]] = []
        broken: list[tuple[_Case, str]] = []
        for i, case in items:
            try:
                lib = _load(module([(i, case)]), target, Path(scratch) / f"{i}.so")
                built.append(functions(lib, i))
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                broken.append((case, f"does not build: {first[:120]}"))
                built.append((None, None))
        return built, broken


def _load(mod: tvm.IRModule, target: tvm.target.Target, path: Path) -> Any:
    """Compile, link and load a kernel library (an exported -O0 library links in half the
    time LLVM's JIT takes to generate the same code)."""
    import tvm

    tvm.compile(mod, target=target).export_library(str(path))
    return tvm.runtime.load_module(str(path))


def _exported(func: tvm.tirx.PrimFunc, symbol: str) -> tvm.tirx.PrimFunc:
    return _as_scheduled(func).with_attr("global_symbol", symbol)


def _as_scheduled(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    return func.with_attr("tirx.is_scheduled", True)


def _is_scheduled(func: tvm.tirx.PrimFunc) -> bool:
    return bool(func.attrs and func.attrs.get("tirx.is_scheduled"))


def _lift_scratch(
    func: tvm.tirx.PrimFunc,
) -> tuple[tvm.tirx.PrimFunc, tuple[tuple[tuple[int, ...], str], ...]]:
    """The kernel with its root-level global scratch buffers turned into trailing arguments
    (so a check can fill them), and their (shape, dtype). Register-level ("local") buffers
    stay: the rules initialize their accumulators in the same block that allocates them."""
    import tvm
    from tvm import s_tir

    realize = func.body
    if not isinstance(realize, s_tir.stmt.SBlockRealize):
        return func, ()
    root = realize.block
    lift = [b for b in root.alloc_buffers if b.scope() == "global" and _static(b.shape)]
    if not lift:
        return func, ()
    keep = [b for b in root.alloc_buffers if not any(b.same_as(x) for x in lift)]
    block = s_tir.stmt.SBlock(
        root.iter_vars,
        root.reads,
        root.writes,
        root.name_hint,
        root.body,
        root.init,
        keep,
        root.match_buffers,
        root.annotations,
    )
    body = s_tir.stmt.SBlockRealize(realize.iter_values, realize.predicate, block)
    lifted = tvm.tirx.PrimFunc([*func.params, *lift], body, func.ret_type, func.attrs)
    shapes = tuple((tuple(int(d) for d in b.shape), str(b.dtype)) for b in lift)
    return lifted, shapes


def _written(func: tvm.tirx.PrimFunc) -> tuple[int, ...]:
    """Indices of the parameters some block writes (the kernel's outputs)."""
    import tvm_ffi
    from tvm import s_tir

    written: list[Any] = []

    def visit(block: s_tir.stmt.SBlock) -> None:
        written.extend(w.source for w in block.writes)

    tvm_ffi.structural_walk(func.body, [(s_tir.stmt.SBlock, visit)], order="post")
    return tuple(i for i, p in enumerate(func.params) if any(p.same_as(w) for w in written))


def _arguments(
    func: tvm.tirx.PrimFunc, constants: Sequence[np.ndarray | None] | None, seed: int
) -> list[np.ndarray]:
    """Inputs for one kernel: the model's constant where bound, else seeded random data
    (N(0,1) floats; 8-bit integers uniform over their range: quantized data, which integer
    matmuls must be checked on; wider integers 0, which indexes any axis, or 1 where the
    kernel divides by its data: an integer division by zero is SIGFPE, which would kill the
    compile)."""
    rng = np.random.default_rng(seed)
    integer = 1 if _divides_by_data(func) else 0
    args = []
    for i, param in enumerate(func.params):
        shape = tuple(int(d) for d in param.shape)
        dtype = np.dtype(str(param.dtype))
        given = constants[i] if constants is not None and i < len(constants) else None
        if given is not None and given.shape == shape and given.dtype == dtype:
            args.append(given)
        elif _is_float(dtype):
            args.append(np.asarray(rng.standard_normal(shape)).astype(dtype))
        elif dtype.kind in "iu" and dtype.itemsize == 1 and not integer:
            info = np.iinfo(dtype)
            args.append(rng.integers(info.min, info.max, shape, dtype, endpoint=True))
        else:
            args.append(np.full(shape, integer, dtype))
    return args


# `a // B[i]`, `a % B[i]`, or an integer division call (T.Div(a, b), T.floormod(a, b), ...) in
# TVMScript: possibly a divisor read from a buffer (index arithmetic divides by constants, as
# `v // 4`). Over-matching only means integer inputs of 1 instead of 0.
_DATA_DIVISOR = re.compile(r"(//|%)\s*\w+\[|T\.(Div|Mod|truncdiv|truncmod|floordiv|floormod)\(")


def _divides_by_data(func: tvm.tirx.PrimFunc) -> bool:
    return _DATA_DIVISOR.search(func.script()) is not None


def _call(
    func: Any,
    args: list[np.ndarray],
    outputs: tuple[int, ...],
    scratch: tuple[tuple[tuple[int, ...], str], ...],
    poison: float,
    dev: Any,
) -> list[np.ndarray]:
    import tvm

    arrays = [
        _poisoned(a.shape, a.dtype, poison) if i in outputs else a for i, a in enumerate(args)
    ]
    arrays += [_poisoned(shape, np.dtype(dtype), poison) for shape, dtype in scratch]
    tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
    func(*tensors)
    return [tensors[i].numpy() for i in outputs]


def _poisoned(shape: tuple[int, ...], dtype: np.dtype, poison: float) -> np.ndarray:
    if dtype.kind == "f":  # a finite poison stays finite (1e6 is inf in fp16)
        big = float(np.finfo(dtype).max)
        return np.full(shape, np.clip(poison, -big, big), np.float32).astype(dtype)
    if _is_float(dtype):
        return np.full(shape, poison, np.float32).astype(dtype)
    if dtype.kind in "iu":
        # distinct per poison, as the float ones are: a partial reference is told apart
        # from its poison by two runs with different ones
        info = np.iinfo(dtype)
        value = info.max // 3 if np.isnan(poison) else int(np.clip(poison, info.min, info.max))
        return np.full(shape, value, dtype)
    return np.ones(shape, dtype)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise bitwise-equal values (NaN equals NaN)."""
    if not _is_float(a.dtype):
        return a == b
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _rtol(func: tvm.tirx.PrimFunc) -> float:
    """The rounding a kernel's results carry: that of the narrowest float it computes in
    (any buffer: an fp16 softmax whose result is cast to fp32 has fp16's rounding)."""
    import tvm_ffi
    from tvm import s_tir

    dtypes = {str(getattr(p.ty, "dtype", "")) for p in func.params}

    def visit(block: s_tir.stmt.SBlock) -> None:
        dtypes.update(str(b.dtype) for b in block.alloc_buffers)

    tvm_ffi.structural_walk(func.body, [(s_tir.stmt.SBlock, visit)], order="pre")
    return max([_RTOL] + [_NARROW_RTOL[d] for d in dtypes if d in _NARROW_RTOL])


def _mismatches(expected: np.ndarray, actual: np.ndarray, rtol: float = _RTOL) -> int:
    """How many values of `actual` are not `expected` up to float rounding (`rtol`: the
    kernel's, `_rtol`; at least that of the output's own dtype)."""
    if not _is_float(expected.dtype):
        return int(np.count_nonzero(expected != actual))
    rtol = max(rtol, _NARROW_RTOL.get(expected.dtype.name, _RTOL))
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    finite = np.isfinite(e)
    scale = float(np.abs(e[finite]).max()) if finite.any() else 0.0
    with np.errstate(invalid="ignore"):
        close = np.abs(a - e) <= _ATOL_OF_SCALE * scale + rtol * np.abs(e) + 1e-6
    same = close | (a == e) | (np.isnan(a) & np.isnan(e))
    return int(np.count_nonzero(~same))


def _static(shape: Sequence[Any]) -> bool:
    import tvm

    return (
        all(isinstance(d, tvm.tirx.IntImm) for d in shape) and math.prod(int(d) for d in shape) > 0
    )


def _blocks(sch: Any) -> list[Any]:
    """Every block of a schedule's function except the root."""
    import tvm_ffi
    from tvm import s_tir

    names: list[str] = []

    def visit(block: s_tir.stmt.SBlock) -> None:
        names.append(block.name_hint)

    tvm_ffi.structural_walk(sch.mod["main"].body, [(s_tir.stmt.SBlock, visit)], order="pre")
    return [sch.get_sblock(n) for n in names[1:]]


def _bindings(expr: Any) -> list[Any]:
    from tvm import relax

    if not isinstance(expr, relax.SeqExpr):
        return []
    return [b for block in expr.blocks for b in block.bindings]


def _is_call_tir(value: Any) -> bool:
    import tvm
    from tvm import relax

    return isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_tir"))
