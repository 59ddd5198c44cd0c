"""Run compiled corpus artifacts on inputs compile's check never saw, against onnxruntime.

Compile verifies on seeded N(0, 1) inputs. Wrong code can still pass there: a kernel that
is right only for small magnitudes, a branch random inputs never take, a batch row read
from the wrong place. This feeds each artifact other input sets (another seed, image-like
[0, 1), N(0, 10), all-ones masks/ids) and prints, per set, the worst output's error as a
fraction of the default tolerance (> 1 fails) and its cosine:

    .venv/bin/python scripts/corpus_stress.py NAME [NAME...]   # names in scripts/corpus.toml

Large-magnitude sets can legitimately lose digits (softmax saturation, fp32 sums), so a
failure there is a lead to examine, not a verdict; one on `seed1` or `unit` is a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
from corpus import CORPUS, load_list

from tvmflow.accuracy import (
    Tolerance,
    compare,
    onnxruntime_outputs,
    output_scales,
    tolerance_for,
)
from tvmflow.inputs import random_inputs
from tvmflow.manifest import TensorSpec

Feeds = dict[str, np.ndarray]


def _floats(specs: Sequence[TensorSpec], seed: int, draw: Callable[..., np.ndarray]) -> Feeds:
    """Seed-1 inputs with every float input replaced by DRAW(rng, shape)."""
    feeds = random_inputs(specs, seed=1)
    rng = np.random.default_rng(seed)
    for spec in specs:
        if feeds[spec.name].dtype.kind == "f":
            feeds[spec.name] = draw(rng, spec.shape).astype(feeds[spec.name].dtype)
    return feeds


def _ones_ints(specs: Sequence[TensorSpec]) -> Feeds:
    feeds = random_inputs(specs, seed=2)
    for name, value in feeds.items():
        if value.dtype.kind in "iub":
            feeds[name] = np.ones_like(value)
    return feeds


INPUT_SETS: dict[str, Callable[[Sequence[TensorSpec]], Feeds]] = {
    "seed1": lambda specs: random_inputs(specs, seed=1),
    "unit": lambda specs: _floats(specs, 3, lambda rng, shape: rng.random(shape)),
    "x10": lambda specs: _floats(specs, 4, lambda rng, shape: 10 * rng.standard_normal(shape)),
    "ones": _ones_ints,
}


def stress(name: str) -> list[str]:
    import tvmflow

    entry = {e.name: e for e in load_list()[0]}[name]
    model = tvmflow.load(CORPUS / "artifacts" / name)
    lines = []
    for label, make in INPUT_SETS.items():
        feeds = make(model.inputs)
        expected = onnxruntime_outputs(entry.path, feeds)
        tol = tolerance_for("fp32", Tolerance(), expected)  # what compile holds it to
        actual = model.run(feeds)
        scales = output_scales(expected)
        worst = max(
            compare(actual, expected),
            key=lambda a: a.max_abs_err / max(tol.allowed(a, scales[a.name]), 1e-30),
        )
        ratio = worst.max_abs_err / max(tol.allowed(worst, scales[worst.name]), 1e-30)
        flag = "FAIL" if not ratio <= 1 else "ok"
        lines.append(
            f"{name:28s} {label:6s} {flag:4s} err/allowed {ratio:8.3g} "
            f"cos {worst.cosine:.6f} ({worst.name}, max|ref| {scales[worst.name]:.3g})"
        )
    return lines


def main() -> None:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # no constant-folding notes per session
    for name in sys.argv[1:]:
        try:
            lines = stress(name)
        except Exception as exc:  # one broken artifact does not stop the others
            lines = [f"{name:28s} error: {type(exc).__name__}: {exc}"[:300]]
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
