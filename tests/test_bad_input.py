"""Hostile input, table-driven: what a careless or hostile user types, and what must happen.

Every case runs the CLI in-process (as tests/test_cli.py does) and states the exit code, a
fragment of the message, and what must or must not be on disk afterwards. A user's mistake is
exit 2 and exactly one line on stderr naming the problem and the fix, without a traceback;
nothing the user made is overwritten; a command that fails leaves nothing behind.

A failing case's message starts with its class, as counted in issue 9's corpus, checked in
this order: UNSAFE (a file or folder of the user's changed), WRONG CODE, LITTER (something left
behind), NOISY (not one line, or a traceback), MESSAGE (the fragment is missing), WRONG RESULT
(the command did the wrong thing: a file missing or not where it said, a wrong manifest).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvmflow import zoo
from tvmflow.cli import main

ROOT = Path(__file__).resolve().parent.parent

Setup = Callable[["Env", Path], None]
Check = Callable[["Env", Path], "str | None"]


@dataclass(frozen=True)
class Env:
    """What the module builds once: the tiny model, its artifact and tuning log, a look-alike."""

    dir: Path
    model: Path  # the zoo MLP, input x: float32[batch, 64]
    other: Path  # the same signature with other weights
    artifact: Path  # `model` compiled for x86 at x=2,64
    log: Path  # `model` tuned at x=2,64: each kernel's untuned trial 0

    def subs(self, tmp: Path) -> dict[str, str]:
        return {
            "tmp": str(tmp),
            "model": str(self.model),
            "other": str(self.other),
            "art": str(self.artifact),
            "log": str(self.log),
        }


@dataclass(frozen=True)
class Case:
    """One hostile command: args ({tmp}, {model}, {other}, {art}, {log} are filled in)."""

    id: str
    args: tuple[str, ...]
    code: int
    fragment: str
    setup: Sequence[Setup] = ()
    exists: tuple[str, ...] = ()  # paths under {tmp} that must exist afterwards
    absent: tuple[str, ...] = ()  # paths under {tmp} that must not (litter)
    untouched: tuple[str, ...] = ()  # the user's files or folders under {tmp}: no byte changes
    check: Check | None = None  # more about the result of a command that succeeds
    marks: tuple[Any, ...] = field(default=())


# -- tiny hostile models and other files --------------------------------------------------------


def _tiny(opset: int = 17, outputs: bool = True, domain: str = "") -> onnx.ModelProto:
    """x: float32[2, 64] @ w[64, 8]: the smallest model to break in interesting ways."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 64 * 8, dtype=np.float32).reshape(64, 8), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])] if outputs else [],
        [w],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def _wide() -> onnx.ModelProto:
    """x: float32[2, 512] @ w[512, 512], softmax: TVM's and onnxruntime's sums differ in the
    last bits, so it fails a zero tolerance."""
    w = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Softmax", ["m"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 512])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _edited(proto: onnx.ModelProto, **fields: Any) -> onnx.ModelProto:
    for key, value in fields.items():
        setattr(proto, key, value)
    return proto


def _identity(elem_type: int) -> onnx.ModelProto:
    """y = x for an input of an element type tvmflow cannot feed."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", elem_type, [2, 4])],
        [helper.make_tensor_value_info("y", elem_type, [2, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def model(name: str, proto: Callable[[], onnx.ModelProto] = _tiny) -> Setup:
    def make(env: Env, tmp: Path) -> None:
        onnx.save(proto(), str(tmp / name))

    return make


def external(name: str, data: str = "w.bin", keep: int | None = None) -> Setup:
    """The tiny model with its weights in `data`, which keeps its first `keep` bytes (None:
    all; 0: the file is deleted)."""

    def make(env: Env, tmp: Path) -> None:
        onnx.save(
            _tiny(),
            str(tmp / name),
            save_as_external_data=True,
            location=data,
            size_threshold=0,
        )
        path = tmp / data
        if keep == 0:
            path.unlink()
        elif keep is not None:
            path.write_bytes(path.read_bytes()[:keep])

    return make


def traversal(name: str) -> Setup:
    """External data that points outside the model's folder."""

    def make(env: Env, tmp: Path) -> None:
        proto = _tiny()
        tensor = proto.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "../../etc/passwd"
        onnx.save(proto, str(tmp / name))

    return make


def write(name: str, content: str | bytes) -> Setup:
    def make(env: Env, tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return make


def preset(name: str, text: str) -> Setup:
    return write(name, text)


def scratch(name: str, age_s: float = 0.0) -> Setup:
    """A compile's scratch folder, as old as `age_s` (an old one is a killed compile's)."""

    def make(env: Env, tmp: Path) -> None:
        path = tmp / name
        path.mkdir(parents=True)
        (path / "model.so").write_bytes(b"half a library")
        when = time.time() - age_s
        os.utime(path, (when, when))

    return make


def npz(name: str, **arrays: np.ndarray) -> Setup:
    def make(env: Env, tmp: Path) -> None:
        np.savez(tmp / name, **arrays)  # type: ignore[arg-type]

    return make


def npy(name: str, array: np.ndarray) -> Setup:
    def make(env: Env, tmp: Path) -> None:
        np.save(tmp / name, array)

    return make


def artifact_copy(name: str = "a", edit: Callable[[dict[str, Any]], None] | None = None) -> Setup:
    """The module's artifact copied to {tmp}/name, its manifest changed by `edit`."""

    def make(env: Env, tmp: Path) -> None:
        shutil.copytree(env.artifact, tmp / name)
        if edit is not None:
            path = tmp / name / "manifest.json"
            data = json.loads(path.read_text())
            edit(data)
            path.write_text(json.dumps(data))

    return make


def library(name: str, content: bytes | None, file: str = "model.so") -> Setup:
    """Replace (or, with None, delete) the copied artifact's model.so (or another file)."""

    def make(env: Env, tmp: Path) -> None:
        path = tmp / name / file
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)

    return make


def log_copy(name: str = "log", damage: Callable[[Path], None] | None = None) -> Setup:
    """The module's tuning log copied to {tmp}/name, then damaged by `damage`."""

    def make(env: Env, tmp: Path) -> None:
        shutil.copytree(env.log, tmp / name, ignore=shutil.ignore_patterns(".lock*", "logs"))
        if damage is not None:
            damage(tmp / name)

    return make


def cut(file: str, keep: float = 0.5) -> Callable[[Path], None]:
    """Cut a database file in the middle of its last line (a write interrupted by a kill)."""

    def damage(log: Path) -> None:
        path = log / file
        data = path.read_bytes()
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        path.write_bytes(data[: last + int((len(data) - last) * keep)])

    return damage


def retarget(log: Path) -> None:
    """The log says it was tuned for another CPU."""
    path = log / "summary.json"
    data = json.loads(path.read_text())
    data["target"] = {**data["target"], "mcpu": "x86-64-v2"}
    data["identity"]["target"] = data["target"]
    path.write_text(json.dumps(data))


def killed_job(log: Path) -> None:
    """What `kill -9` of a tune job leaves: its holder note, working copy with candidate
    libraries, and a summary that still says running."""
    (log / ".lock.json").write_text(json.dumps({"pid": 2**22 + 7, "host": "x", "started": 0}))
    (log / ".work" / "candidates" / "tvmflow-candidate-abc").mkdir(parents=True)
    (log / ".work" / "candidates" / "tvmflow-candidate-abc" / "candidate.so").write_bytes(b"x")
    summary = json.loads((log / "summary.json").read_text())
    summary["last_job"]["stopped"] = "running"
    (log / "summary.json").write_text(json.dumps(summary))


def not_running(env: Env, tmp: Path) -> str | None:
    stopped = json.loads((tmp / "log" / "summary.json").read_text())["last_job"]["stopped"]
    return None if stopped != "running" else "the summary still says the killed job is running"


def digest_recorded(env: Env, tmp: Path) -> str | None:
    tuning = json.loads((tmp / "a" / "manifest.json").read_text())["tuning"]
    if tuning["log_digest"] is None:
        return f"the manifest does not record the consulted log: {tuning}"
    return None


def same_as_native(env: Env, tmp: Path) -> str | None:
    with np.load(tmp / "be.npz") as be, np.load(tmp / "le.npz") as le:
        same = all(np.array_equal(be[k], le[k]) for k in le.files)
    return None if same else "a big-endian input gave other outputs than the same values native"


def written_exactly(name: str) -> Check:
    """The file the command says it wrote is there, under that name (no suffix added)."""

    def check(env: Env, tmp: Path) -> str | None:
        others = sorted(p.name for p in tmp.glob(f"{name}.*"))
        return None if (tmp / name).is_file() and not others else f"wrote {others}, not {name}"

    return check


X = np.ones((2, 64), np.float32)
NOTES = "a user's notes\n"
BAD_KIND = '[target]\nkind = "nosuchkind"\n'
UNKNOWN_MCPU = '[target]\nkind = "llvm"\nmtriple = "x86_64-linux-gnu"\nmcpu = "skylake-avx5120"\n'
C = ("compile", "{model}", "-t", "x86", "--input-shape", "x=2,64")  # + -o ...
T = ("tune", "{model}", "-t", "x86", "--input-shape", "x=2,64")  # + --log ...


def _case(id: str, args: Sequence[str], code: int, fragment: str, **kw: Any) -> Case:
    return Case(id, tuple(args), code, fragment, **kw)


# fmt: off
CASES = [
    # -- the model file ------------------------------------------------------------------------
    _case("model-missing", ("compile", "{tmp}/none.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "does not exist", absent=("o",)),
    _case("model-is-directory", ("compile", "{tmp}", "-t", "x86", "-o", "{tmp}/o"), 2,
          "does not exist", absent=("o",)),
    _case("model-not-onnx", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "not an ONNX model", setup=[write("m.onnx", "this is not protobuf \x00\xff")],
          absent=("o",)),
    _case("model-empty-file", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "m.onnx", setup=[write("m.onnx", b"")], absent=("o",)),
    _case("external-data-missing", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"),
          2, "does not exist", setup=[external("m.onnx", keep=0)], absent=("o",)),
    _case("external-data-short", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "truncated", setup=[external("m.onnx", keep=100)], absent=("o",)),
    _case("external-data-outside", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"),
          2, "outside the model's folder", setup=[traversal("m.onnx")], absent=("o",)),
    _case("opset-99", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "opset 99", setup=[model("m.onnx", lambda: _tiny(opset=99))], absent=("o",)),
    _case("opset-99-no-verify",
          ("compile", "{tmp}/m.onnx", "-t", "x86", "--no-verify", "-o", "{tmp}/o"), 2,
          "opset 99", setup=[model("m.onnx", lambda: _tiny(opset=99))], absent=("o",)),
    _case("ir-version-99", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "ir_version 99", setup=[model("m.onnx", lambda: _edited(_tiny(), ir_version=99))],
          absent=("o",)),
    # refused before import (TVM's importer failing on it would be tvmflow's failure, exit 1)
    _case("string-input", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "'x' is a string tensor", setup=[model("m.onnx", lambda: _identity(TensorProto.STRING))],
          absent=("o",)),
    _case("bfloat16-input", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "bfloat16", setup=[model("m.onnx", lambda: _identity(TensorProto.BFLOAT16))],
          absent=("o",)),
    _case("no-outputs", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "no graph outputs", setup=[model("m.onnx", lambda: _tiny(outputs=False))],
          absent=("o",)),
    _case("custom-domain-op", ("compile", "{tmp}/m.onnx", "-t", "x86", "-o", "{tmp}/o"), 2,
          "unsupported operators", setup=[model("m.onnx", lambda: _tiny(domain="com.acme"))],
          absent=("o",)),
    # -- input shapes --------------------------------------------------------------------------
    _case("dynamic-dim-unfixed", ("compile", "{model}", "-t", "x86", "-o", "{tmp}/o"), 2,
          "--input-shape x=batch,64", absent=("o",)),
    _case("shape-unknown-input", (*C, "--input-shape", "y=2,64", "-o", "{tmp}/o"), 2,
          "unknown input", absent=("o",)),
    _case("shape-wrong-rank", ("compile", "{model}", "-t", "x86", "--input-shape", "x=2,64,1",
          "-o", "{tmp}/o"), 2, "expected 2", absent=("o",)),
    _case("shape-conflicts-static-dim", ("compile", "{model}", "-t", "x86", "--input-shape",
          "x=2,65", "-o", "{tmp}/o"), 2, "fixes it to 64", absent=("o",)),
    _case("shape-given-twice", (*C, "--input-shape", "x=4,64", "-o", "{tmp}/o"), 2,
          "given twice", absent=("o",)),
    _case("shape-not-a-number", ("compile", "{model}", "-t", "x86", "--input-shape", "x=2,a",
          "-o", "{tmp}/o"), 2, "is not NAME=D1,D2", absent=("o",)),
    _case("shape-zero-dim", ("compile", "{model}", "-t", "x86", "--input-shape", "x=0,64",
          "-o", "{tmp}/o"), 2, "positive integer dims", absent=("o",)),
    _case("shape-negative-dim", ("compile", "{model}", "-t", "x86", "--input-shape", "x=-1,64",
          "-o", "{tmp}/o"), 2, "positive integer dims", absent=("o",)),
    _case("shape-no-name", ("compile", "{model}", "-t", "x86", "--input-shape", "=2,64",
          "-o", "{tmp}/o"), 2, "is not NAME=D1,D2", absent=("o",)),
    _case("shape-absurd", ("compile", "{model}", "-t", "x86", "--input-shape",
          "x=1000000000000,64", "-o", "{tmp}/o"), 2, "256000000000000 bytes", absent=("o",)),
    # -- targets -------------------------------------------------------------------------------
    _case("target-unknown", ("compile", "{model}", "-t", "x87", "-o", "{tmp}/o"), 2,
          "unknown target 'x87'", absent=("o",)),
    _case("target-missing", ("compile", "{model}", "-o", "{tmp}/o"), 2,
          "Missing option '--target'", absent=("o",)),
    _case("preset-file-missing", ("compile", "{model}", "-t", "{tmp}/p.toml", "-o", "{tmp}/o"),
          2, "does not exist", absent=("o",)),
    _case("preset-bad-toml", (*C[:2], "-t", "{tmp}/p.toml", *C[4:], "-o", "{tmp}/o"), 2,
          "cannot read target preset", setup=[preset("p.toml", "[target\nkind=")],
          absent=("o",)),
    _case("preset-unknown-key", (*C[:2], "-t", "{tmp}/p.toml", *C[4:], "-o", "{tmp}/o"), 2,
          "unknown keys ['colour']", setup=[preset("p.toml", 'colour = "red"\n')],
          absent=("o",)),
    _case("preset-target-not-table", (*C[:2], "-t", "{tmp}/p.toml", *C[4:], "-o", "{tmp}/o"),
          2, "`target` must be a table", setup=[preset("p.toml", 'target = "llvm"\n')],
          absent=("o",)),
    _case("preset-no-kind", (*C[:2], "-t", "{tmp}/p.toml", *C[4:], "-o", "{tmp}/o"), 2,
          "needs a `kind`", setup=[preset("p.toml", '[target]\nmcpu = "x86-64-v3"\n')],
          absent=("o",)),
    _case("preset-unknown-kind", (*C[:2], "-t", "{tmp}/p.toml", *C[4:], "-o", "{tmp}/o"), 2,
          "nosuchkind", setup=[preset("p.toml", BAD_KIND)], absent=("o",)),
    _case("preset-unknown-mcpu", (*C[:2], "-t", "{tmp}/p.toml", *C[4:], "-o", "{tmp}/o"), 2,
          "did you mean skylake-avx512", setup=[preset("p.toml", UNKNOWN_MCPU)],
          absent=("o",)),
    _case("preset-bad-device", (*C[:2], "-t", "{tmp}/p.toml", *C[4:], "-o", "{tmp}/o"), 2,
          "device must be one of", setup=[preset("p.toml", 'device = "tpu"\n[target]\nkind = '
          '"llvm"\n')], absent=("o",)),
    _case("preset-features-not-list", (*C[:2], "-t", "{tmp}/p.toml", *C[4:], "-o", "{tmp}/o"),
          2, "`cpu_features` must be a list", setup=[preset("p.toml", 'cpu_features = "avx2"\n'
          '[target]\nkind = "llvm"\n')], absent=("o",)),
    _case("fp16-on-cpu", (*C, "--precision", "fp16", "-o", "{tmp}/o"), 2, "CUDA targets",
          absent=("o",)),
    # -- the output directory ------------------------------------------------------------------
    _case("output-is-a-file", (*C, "-o", "{tmp}/f"), 2, "is a file",
          setup=[write("f", NOTES)], untouched=("f",)),
    _case("output-under-a-file", (*C, "-o", "{tmp}/f/sub"), 2, "is a file, not a directory",
          setup=[write("f", NOTES)], untouched=("f",)),
    _case("output-unwritable", (*C, "-o", "/sys/tvmflow-hostile/o"), 2, "cannot write"),
    _case("output-non-empty-not-artifact", (*C, "-o", "{tmp}/d"), 2,
          "not empty and not a tvmflow artifact", setup=[write("d/notes.txt", NOTES)],
          untouched=("d",)),
    _case("output-foreign-manifest", (*C, "-o", "{tmp}/d"), 2,
          "not empty and not a tvmflow artifact",
          setup=[write("d/manifest.json", '{"name": "my web app"}')],
          untouched=("d",)),
    _case("output-existing-artifact-replaced",
          (*C, "-o", "{tmp}/a", "--no-shipped-logs", "--tuning-log", "{log}"), 0, "compiled",
          setup=[artifact_copy("a", lambda m: m.update(compile_seconds=-1.0))],
          exists=("a/model.so", "a/manifest.json"), check=digest_recorded),
    _case("output-scratch-of-killed-and-running-compiles", (*C, "-o", "{tmp}/d"), 0,
          "compiled", setup=[scratch("d/.build-killed", age_s=86400), scratch("d/.build-live")],
          absent=("d/.build-killed",), exists=("d/.build-live", "d/model.so")),
    _case("accuracy-failure-leaves-nothing", ("compile", "{tmp}/m.onnx", "-t", "x86", "--atol",
          "0", "--rtol", "0", "-o", "{tmp}/new/o"), 1, "beyond tolerance",
          setup=[model("m.onnx", lambda: _wide())], absent=("new",)),
    # -- tolerances ----------------------------------------------------------------------------
    _case("atol-negative", (*C, "--atol", "-1", "-o", "{tmp}/o"), 2, "--atol -1.0 is not a "
          "tolerance", absent=("o",)),
    _case("rtol-nan", (*C, "--rtol", "nan", "-o", "{tmp}/o"), 2, "--rtol nan", absent=("o",)),
    _case("atol-inf", (*C, "--atol", "inf", "-o", "{tmp}/o"), 2, "--atol inf", absent=("o",)),
    _case("atol-not-a-number", (*C, "--atol", "tight", "-o", "{tmp}/o"), 2,
          "'tight' is not a valid float", absent=("o",)),
    # -- tuning logs at compile ----------------------------------------------------------------
    _case("tuning-log-not-a-log", (*C, "--tuning-log", "{tmp}", "-o", "{tmp}/o"), 2,
          "is not a tuning log directory", absent=("o",)),
    _case("tuning-log-missing", (*C, "--tuning-log", "{tmp}/none", "-o", "{tmp}/o"), 2,
          "is not a tuning log directory", absent=("o", "none")),
    _case("tuning-log-records-cut", (*C, "--tuning-log", "{tmp}/log", "-o", "{tmp}/o"), 2,
          "database_tuning_record.json is damaged at line ",
          setup=[log_copy("log", cut("database_tuning_record.json"))], absent=("o",)),
    _case("tuning-log-workloads-cut", (*C, "--tuning-log", "{tmp}/log", "-o", "{tmp}/o"), 2,
          "database_workload.json is damaged at line ",
          setup=[log_copy("log", cut("database_workload.json"))], absent=("o",)),
    _case("tuning-log-other-target", (*C, "--tuning-log", "{tmp}/log", "-o", "{tmp}/o"), 2,
          "was tuned for target", setup=[log_copy("log", retarget)], absent=("o",)),
    # -- run -----------------------------------------------------------------------------------
    _case("run-no-inputs", ("run", "{art}"), 2, "give either --random or inputs"),
    _case("run-random-and-inputs", ("run", "{art}", "--random", "--inputs", "{tmp}/in.npz"), 2,
          "give either --random or inputs", setup=[npz("in.npz", x=X)]),
    _case("run-input-not-pair", ("run", "{art}", "--input", "x"), 2, "is not NAME=FILE.npy"),
    _case("run-input-missing-file", ("run", "{art}", "--input", "x={tmp}/none.npy"), 2,
          "does not exist"),
    _case("run-npz-wrong-shape", ("run", "{art}", "--inputs", "{tmp}/in.npz"), 2,
          "x is float32[3,64]", setup=[npz("in.npz", x=np.ones((3, 64), np.float32))]),
    _case("run-npz-wrong-name", ("run", "{art}", "--inputs", "{tmp}/in.npz"), 2,
          "missing x; unknown y", setup=[npz("in.npz", y=X)]),
    _case("run-npz-wrong-dtype", ("run", "{art}", "--inputs", "{tmp}/in.npz"), 2,
          "x is float64[2,64]", setup=[npz("in.npz", x=X.astype(np.float64))]),
    _case("run-npz-corrupt", ("run", "{art}", "--inputs", "{tmp}/in.npz"), 2,
          "cannot read input file", setup=[write("in.npz", b"PK\x03\x04 not really a zip")]),
    _case("run-npz-empty-file", ("run", "{art}", "--inputs", "{tmp}/in.npz"), 2,
          "cannot read input file", setup=[write("in.npz", b"")]),
    _case("run-npy-given-as-npz", ("run", "{art}", "--inputs", "{tmp}/x.npy"), 2,
          "is an .npy file", setup=[npy("x.npy", X)]),
    _case("run-npz-given-as-npy", ("run", "{art}", "--input", "x={tmp}/in.npz"), 2,
          "is an .npz archive", setup=[npz("in.npz", x=X)]),
    _case("run-input-given-twice", ("run", "{art}", "--input", "x={tmp}/a.npy", "--input",
          "x={tmp}/b.npy"), 2, "given twice", setup=[npy("a.npy", X), npy("b.npy", X)]),
    _case("run-input-in-npz-and-flag", ("run", "{art}", "--inputs", "{tmp}/in.npz", "--input",
          "x={tmp}/a.npy"), 2, "given twice", setup=[npz("in.npz", x=X), npy("a.npy", X)]),
    _case("run-seed-negative", ("run", "{art}", "--random", "--seed", "-1"), 2, "--seed"),
    _case("run-big-endian-npy", ("run", "{art}", "--input", "x={tmp}/be.npy", "-o",
          "{tmp}/be.npz"), 0, "wrote 2 output(s)",
          setup=[npy("be.npy", X.astype(">f4")), lambda env, tmp: _run_native(env, tmp)],
          check=same_as_native),
    _case("run-nan-input-warns", ("run", "{art}", "--input", "x={tmp}/x.npy"), 0,
          "input 'x' holds 3 NaN/Inf value(s)",
          setup=[npy("x.npy", np.where(np.arange(128).reshape(2, 64) < 3, np.nan, X))]),
    _case("run-output-without-suffix", ("run", "{art}", "--random", "-o", "{tmp}/in"), 0,
          "to {tmp}/in", check=written_exactly("in")),
    _case("run-output-missing-directory", ("run", "{art}", "--random", "-o",
          "{tmp}/new/dir/out.npz"), 0, "wrote", exists=("new/dir/out.npz",)),
    _case("run-output-is-a-directory", ("run", "{art}", "--random", "-o", "{tmp}"), 2,
          "is a directory"),
    _case("run-output-would-clobber", ("run", "{art}", "--random", "-o", "{tmp}/notes.txt"),
          2, "is not an .npz archive", setup=[write("notes.txt", NOTES)],
          untouched=("notes.txt",)),
    _case("run-output-unwritable", ("run", "{art}", "--random", "-o",
          "/sys/tvmflow-hostile/o.npz"), 2, "cannot write"),
    _case("run-not-a-directory", ("run", "{tmp}/none", "--random"), 2,
          "not a tvmflow artifact"),
    _case("run-no-manifest", ("run", "{tmp}", "--random"), 2, "manifest.json is missing"),
    _case("run-manifest-not-json", ("run", "{tmp}/a", "--random"), 2, "is not valid JSON",
          setup=[artifact_copy("a"), write("a/manifest.json", "{not json")]),
    _case("run-manifest-future-format", ("run", "{tmp}/a", "--random"), 2,
          "format version 99", setup=[artifact_copy("a", lambda m: m.update(format_version=99))]),
    _case("run-manifest-incomplete", ("run", "{tmp}/a", "--random"), 2, "is incomplete",
          setup=[artifact_copy("a", lambda m: m.pop("inputs"))]),
    _case("run-manifest-shape-edited", ("run", "{tmp}/a", "--random"), 2,
          "does not have the signature its manifest.json describes",
          setup=[artifact_copy("a", lambda m: m["inputs"][0].update(shape=[4, 64]))]),
    _case("run-manifest-dtype-edited", ("run", "{tmp}/a", "--random"), 2,
          "does not have the signature its manifest.json describes",
          setup=[artifact_copy("a", lambda m: m["inputs"][0].update(dtype="float64"))]),
    _case("run-manifest-output-edited", ("run", "{tmp}/a", "--random"), 2,
          "does not have the signature its manifest.json describes",
          setup=[artifact_copy("a", lambda m: m["outputs"][0].update(shape=[2, 5]))]),
    _case("run-manifest-input-added", ("run", "{tmp}/a", "--random"), 2,
          "does not have the signature its manifest.json describes",
          setup=[artifact_copy("a", lambda m: m["inputs"].append({**m["inputs"][0],
                                                                  "name": "y"}))]),
    _case("run-library-tampered", ("run", "{tmp}/a", "--random"), 2,
          "does not match the sha256", setup=[artifact_copy("a"), library("a", b"\x7fELF")]),
    _case("run-library-missing", ("run", "{tmp}/a", "--random"), 2, "has no model.so",
          setup=[artifact_copy("a"), library("a", None)]),
    _case("run-weights-tampered", ("run", "{tmp}/a", "--random"), 2,
          "weights.npz does not match the sha256",
          setup=[artifact_copy("a"), library("a", b"PK\x03\x04", "weights.npz")]),
    _case("run-weights-missing", ("run", "{tmp}/a", "--random"), 2, "has no weights.npz",
          setup=[artifact_copy("a"), library("a", None, "weights.npz")]),
    _case("run-manifest-without-weights", ("run", "{tmp}/a", "--random"), 2,
          "does not list the weights file",
          setup=[artifact_copy("a", lambda m: m.pop("weights"))]),
    _case("run-other-arch", ("run", "{tmp}/a", "--random"), 2, "was built for aarch64",
          setup=[artifact_copy("a", lambda m: m.update(arch="aarch64"))]),
    _case("run-emulate-x86-artifact", ("run", "{art}", "--random", "--emulate"), 2, "x86_64"),
    _case("inspect-not-artifact", ("inspect", "{tmp}"), 2, "not a tvmflow artifact"),
    _case("inspect-a-file", ("inspect", "{tmp}/f"), 2, "not a tvmflow artifact",
          setup=[write("f", NOTES)]),
    _case("demo-workdir-is-a-file", ("demo", "--workdir", "{tmp}/f"), 2, "is a file",
          setup=[write("f", NOTES)], untouched=("f",)),
    # -- tune ----------------------------------------------------------------------------------
    _case("time-limit-empty", (*T, "--log", "{tmp}/l", "--time-limit", ""), 2,
          "'' is not a duration", absent=("l",)),
    _case("time-limit-nan", (*T, "--log", "{tmp}/l", "--time-limit", "nan", "--trials", "1"),
          2, "'nan' is not a duration", absent=("l",)),
    _case("time-limit-inf", (*T, "--log", "{tmp}/l", "--time-limit", "inf", "--trials", "1"),
          2, "'inf' is not a duration", absent=("l",)),
    _case("time-limit-negative", (*T, "--log", "{tmp}/l", "--time-limit", "-5m"), 2,
          "is not a duration", absent=("l",)),
    _case("time-limit-unit", (*T, "--log", "{tmp}/l", "--time-limit", "2d"), 2,
          "is not a duration", absent=("l",)),
    _case("trials-zero", (*T, "--log", "{tmp}/l", "--trials", "0"), 2,
          "--trials must be a positive number", absent=("l",)),
    _case("tasks-out-of-range", (*T, "--log", "{tmp}/l", "--tasks", "3/2"), 2,
          "is not i/N", absent=("l",)),
    _case("rpc-key-without-tracker", (*T, "--log", "{tmp}/l", "--rpc-key", "pi"), 2,
          "go together", absent=("l",)),
    _case("tune-log-is-a-file", (*T, "--log", "{tmp}/f"), 2, "is a file",
          setup=[write("f", NOTES)], untouched=("f",)),
    _case("tune-log-unwritable", (*T, "--log", "/sys/tvmflow-hostile/l"), 2, "cannot write"),
    _case("tune-log-not-empty", (*T, "--log", "{tmp}/d"), 2,
          "not empty and not a tuning log", setup=[write("d/notes.txt", NOTES)],
          untouched=("d",)),
    _case("tune-seed-negative", (*T, "--log", "{tmp}/l", "--seed", "-3"), 2, "--seed",
          absent=("l",)),
    _case("tune-log-of-another-model",
          ("tune", "{other}", "-t", "x86", "--input-shape", "x=2,64", "--log", "{log}"), 2,
          "records are never mixed"),
    _case("tune-log-foreign-database", (*T, "--log", "{tmp}/log"), 2, "did not write",
          setup=[log_copy("log", lambda p: (p / "summary.json").unlink())]),
    _case("tune-log-damaged", (*T, "--log", "{tmp}/log", "--trials", "1"), 2,
          "database_tuning_record.json is damaged at line ",
          setup=[log_copy("log", cut("database_tuning_record.json"))],
          absent=("log/.work", "log/.lock.json")),
    _case("tune-log-damaged-repaired", (*T, "--log", "{tmp}/log", "--trials", "1",
          "--repair-log"), 0, "trial budget reached",
          setup=[log_copy("log", cut("database_tuning_record.json"))],
          exists=("log/database_tuning_record.json.damaged",),
          absent=("log/.work", "log/.lock.json")),
    _case("tune-after-kill-9", (*T, "--log", "{tmp}/log", "--trials", "1"), 0,
          "trial budget reached", setup=[log_copy("log", killed_job)],
          absent=("log/.work", "log/.lock.json"), check=not_running),
    _case("tune-arm-without-farm", ("tune", "{model}", "-t", "arm-neoverse-n1",
          "--input-shape", "x=2,64", "--log", "{tmp}/l"), 2, "--rpc-tracker", absent=("l",)),
    # -- logs merge ----------------------------------------------------------------------------
    _case("merge-damaged", ("logs", "merge", "{tmp}/log", "-o", "{tmp}/m"), 2,
          "database_tuning_record.json is damaged at line ",
          setup=[log_copy("log", cut("database_tuning_record.json"))], absent=("m",)),
    _case("merge-not-a-log", ("logs", "merge", "{tmp}", "-o", "{tmp}/m"), 2,
          "is not a tuning log directory", absent=("m",)),
    _case("merge-into-its-input", ("logs", "merge", "{tmp}/log", "-o", "{tmp}/log"), 2,
          "is one of the inputs", setup=[log_copy("log")]),
    _case("merge-different-targets", ("logs", "merge", "{log}", "{tmp}/log", "-o", "{tmp}/m"),
          2, "different targets", setup=[log_copy("log", retarget)], absent=("m",)),
    _case("merge-over-a-log", ("logs", "merge", "{log}", "-o", "{tmp}/log"), 2,
          "already holds a tuning log", setup=[log_copy("log")],
          untouched=("log/database_tuning_record.json",)),
    _case("merge-output-not-empty", ("logs", "merge", "{log}", "-o", "{tmp}/d"), 2,
          "not empty and not a tuning log", setup=[write("d/notes.txt", NOTES)],
          untouched=("d",)),
    _case("merge-output-unwritable", ("logs", "merge", "{log}", "-o", "/sys/tvmflow-hostile/m"),
          2, "cannot write"),
    # -- bench ---------------------------------------------------------------------------------
    _case("bench-artifact-of-other-model", ("bench", "{other}", "--artifact", "{art}",
          "--no-rss"), 2, "compiled from another file"),
    _case("bench-artifact-and-target", ("bench", "{model}", "--artifact", "{art}", "-t",
          "x86"), 2, "give exactly one of"),
    _case("bench-tuning-log-with-artifact", ("bench", "{model}", "--artifact", "{art}",
          "--tuning-log", "{log}"), 2, "applies to --target only"),
    _case("bench-inputs-wrong-shape", ("bench", "{model}", "--artifact", "{art}", "--inputs",
          "{tmp}/in.npz", "--no-rss"), 2, "x is float32[3,64]",
          setup=[npz("in.npz", x=np.ones((3, 64), np.float32))]),
    _case("bench-atol-nan", ("bench", "{model}", "--artifact", "{art}", "--atol", "nan"), 2,
          "--atol nan"),
    _case("bench-threads-zero", ("bench", "{model}", "--artifact", "{art}", "--threads", "0"),
          2, "--threads"),
    _case("bench-threads-beyond-cpus", ("bench", "{model}", "--artifact", "{art}",
          "--threads", "100000"), 2, "--threads"),
    _case("logs-show-damaged", ("logs", "show", "{tmp}/log"), 2,
          "database_workload.json is damaged at line ",
          setup=[log_copy("log", cut("database_workload.json"))]),
    _case("bench-plot-unknown-format", ("bench", "{model}", "--artifact", "{art}", "--plot",
          "{tmp}/r.xyz"), 2, "cannot write .xyz", absent=("r.xyz",)),
    _case("bench-json-is-a-directory", ("bench", "{model}", "--artifact", "{art}", "--json",
          "{tmp}"), 2, "is a directory"),
    _case("bench-json-unwritable", ("bench", "{model}", "--artifact", "{art}", "--json",
          "/sys/tvmflow-hostile/r.json"), 2, "cannot write"),
    _case("bench-json-over-the-model", ("bench", "{tmp}/m.onnx", "--artifact", "{art}",
          "--json", "{tmp}/m.onnx"), 2, "is an input of this benchmark",
          setup=[lambda env, tmp: shutil.copy(env.model, tmp / "m.onnx")],
          untouched=("m.onnx",)),
    _case("bench-seed-negative", ("bench", "{model}", "--artifact", "{art}", "--seed", "-1"), 2,
          "--seed"),
    _case("bench-plot-without-suffix", ("bench", "{model}", "--artifact", "{art}", "--plot",
          "{tmp}/plot", "--no-rss", "--warmup", "0", "--rounds", "1", "--min-time", "0"), 0,
          "wrote {tmp}/plot", check=written_exactly("plot")),
    # -- the command line itself ---------------------------------------------------------------
    _case("unknown-command", ("frobnicate",), 2, "No such command"),
    _case("unknown-option", ("compile", "{model}", "--turbo"), 2, "No such option"),
]
# fmt: on


def _run_native(env: Env, tmp: Path) -> None:
    """The reference for the big-endian case: the same values in native byte order."""
    np.save(tmp / "le.npy", X)
    assert main(["run", str(env.artifact), "--input", f"x={tmp / 'le.npy'}", "-o",
                 str(tmp / "le.npz")]) == 0  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("hostile")
    mlp = zoo.save("mlp", root)
    other = root / "other.onnx"
    onnx.save(zoo.mlp(seed=1), str(other))
    art, log = root / "artifact", root / "log"
    shape = ["--input-shape", "x=2,64"]
    assert main(["compile", str(mlp), "-t", "x86", "-o", str(art), *shape]) == 0
    assert main(["tune", str(mlp), "-t", "x86", "--log", str(log), "--trials", "1", *shape]) == 0
    return Env(root, mlp, other, art, log)


def _snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` (or the file itself) by its sha256."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in files
        if f.is_file()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_command(
    case: Case, env: Env, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    for make in case.setup:
        make(env, tmp_path)
    subs = env.subs(tmp_path)
    before = {name: _snapshot(tmp_path / name) for name in case.untouched}
    capfd.readouterr()
    rc = main([arg.format(**subs) for arg in case.args])
    out, err = capfd.readouterr()

    changed = [n for n in case.untouched if _snapshot(tmp_path / n) != before[n]]
    assert not changed, f"UNSAFE: the user's {changed} changed (exit {rc}: {err})"
    assert rc == case.code, f"WRONG CODE: exit {rc}, expected {case.code}: {err}{out[-300:]}"
    left = [n for n in case.absent if (tmp_path / n).exists()]
    assert not left, f"LITTER: {left} left behind"
    assert "Traceback" not in err, f"NOISY: {err}"
    if rc != 0:  # exactly one line; a command that succeeds may report progress on stderr
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("tvmflow: error: "), f"NOISY: {err}"
    assert case.fragment.format(**subs) in err + out, f"MESSAGE: {err or out}"
    missing = [n for n in case.exists if not (tmp_path / n).exists()]
    problem = case.check(env, tmp_path) if case.check else None
    assert not missing and problem is None, f"WRONG RESULT: missing {missing}; {problem}"


# -- the Python API --------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [0, -1, 100_000, 2.5, True])
def test_load_refuses_thread_counts_out_of_range(env: Env, threads: Any) -> None:
    import tvmflow

    with pytest.raises(tvmflow.TvmflowError, match="num_threads"):
        tvmflow.load(env.artifact, num_threads=threads)


def test_load_accepts_a_sane_thread_count(env: Env) -> None:
    import tvmflow

    model = tvmflow.load(env.artifact, num_threads=1)
    assert model.run({"x": X})["logits"].shape == (2, 16)


def test_error_type_is_importable_from_the_light_package_root() -> None:
    probe = (
        "import sys, tvmflow; from tvmflow import TvmflowError;"
        "assert issubclass(TvmflowError, Exception);"
        "heavy = [m for m in ('tvm', 'onnx', 'onnxruntime', 'tvmflow.compile')"
        " if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_api_run_takes_big_endian_arrays(env: Env) -> None:
    import tvmflow

    model = tvmflow.load(env.artifact)
    native = model.run({"x": X})
    swapped = model.run({"x": X.astype(">f4")})
    assert all(np.array_equal(native[k], swapped[k]) for k in native)
    assert math.isfinite(float(native["logits"].sum()))


def test_the_table_covers_every_class() -> None:
    """Issue 9's classes, each with at least one case (and 60 in all)."""
    ids = {c.id for c in CASES}
    classes = {
        "internal errors": {"external-data-missing", "external-data-short", "opset-99",
                            "opset-99-no-verify", "no-outputs", "shape-absurd",
                            "preset-unknown-kind", "preset-target-not-table",
                            "output-is-a-file", "output-unwritable", "atol-negative",
                            "rtol-nan", "time-limit-empty", "run-big-endian-npy",
                            "run-output-missing-directory", "demo-workdir-is-a-file",
                            "run-manifest-shape-edited"},
        "silent wrong": {"shape-given-twice", "time-limit-nan", "preset-unknown-mcpu",
                         "run-output-without-suffix", "bench-plot-without-suffix",
                         "run-nan-input-warns"},
        "unsafe": {"output-non-empty-not-artifact", "output-existing-artifact-replaced"},
        "litter": {"accuracy-failure-leaves-nothing"},
        "damaged log": {"tuning-log-records-cut", "tune-log-damaged",
                        "tune-log-damaged-repaired", "merge-damaged"},
        "kill -9": {"tune-after-kill-9"},
        "bench sha256": {"bench-artifact-of-other-model"},
        "log digest": {"output-existing-artifact-replaced"},
    }  # fmt: skip
    for name, members in classes.items():
        assert members <= ids, (name, members - ids)
    assert len(CASES) >= 60


# -- kill -9 of a tuning job -------------------------------------------------------------------

JOB = """
import functools, os, sys, time
from tvm.support.popen_pool import PopenPoolExecutor
from tvmflow.tune import die_with_job

init = functools.partial(die_with_job, os.getpid()) if sys.argv[1] == "die" else None
pool = PopenPoolExecutor(max_workers=1, initializer=init)
pool.submit(os.getpid).result()  # the worker is up and has run its initializer
pool.submit(time.sleep, 600)  # now busy, as a worker measuring when its job is killed
time.sleep(1.0)  # the task is on its way to the worker
print("busy", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("initializer", ["die", "none"])
def test_workers_die_with_a_killed_job(initializer: str) -> None:
    """MetaSchedule's worker processes get `die_with_job`: `kill -9` of the job takes them
    along. Without it (the control case) a busy worker outlives its job as an orphan."""
    import psutil

    job = subprocess.Popen(
        [sys.executable, "-c", JOB, initializer], stdout=subprocess.PIPE, text=True
    )
    workers: list[psutil.Process] = []
    try:
        assert job.stdout is not None and job.stdout.readline() == "busy\n"
        workers = psutil.Process(job.pid).children(recursive=True)
        assert workers
        job.kill()
        job.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert bool(alive) == (initializer == "none"), alive
    finally:
        for proc in workers:  # the control case's orphan (and any worker, should this fail)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if job.poll() is None:
            job.kill()
