"""The one exception family the CLI turns into a message and an exit code."""

from __future__ import annotations


class TvmflowError(Exception):
    """A problem the user can fix (bad input, missing tool): one line, exit code 2."""

    exit_code = 2


class AccuracyError(TvmflowError):
    """A compiled artifact disagrees with onnxruntime beyond tolerance: exit code 1."""

    exit_code = 1


class BenchAccuracyError(TvmflowError):
    """`tvmflow bench`: the artifact's outputs disagree with onnxruntime beyond tolerance: exit 3.

    Distinct from AccuracyError (exit 1 from compile) so scripts can tell "measured, but
    wrong" apart from a failed build.
    """

    exit_code = 3


class EmulationError(TvmflowError):
    """An artifact crashed or hung under emulation (not a user mistake): exit code 1."""

    exit_code = 1


class ImporterError(TvmflowError):
    """TVM's importer failed on a valid model: tvmflow's failure, not the user's (exit 1)."""

    exit_code = 1

    def __str__(self) -> str:
        return f"{super().__str__()} (a tvmflow limitation; rerun with --debug for the traceback)"


class RuntimeLibraryError(ImporterError):
    """The build calls a function TVM's runtime library lacks (it lives in TVM's compiler):
    the artifact would not load where tvmflow's runtime runs it (exit 1)."""
