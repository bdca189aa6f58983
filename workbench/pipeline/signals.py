"""Business signals: the post-processed outputs whose mix the business watches.

A pipeline declares which of its outputs are business signals, in Python or in its file::

    business:
      - {name: risk, output: risk_bucket}                  # each value's count and share
      - {name: decision, output: label, values: [malignant]}
      - {name: confident, output: probability, above: 0.9} # share of rows scoring above 0.9

A categorical signal reads a 1-D string or integer output (a label, a bucket) and
counts each value; ``values`` limits which shares are tested for a shift (all of
them by default). A threshold signal (``above``) reads a 1-D float output and
counts the rows ``above`` the threshold and those ``below`` it (an approval rate, a share of high scores).
The declaration is checked when the pipeline is built, against its outputs.
:mod:`workbench.monitor.business` keeps the counts once the pipeline is deployed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workbench.errors import PipelineWiringError, SpecError
from workbench.tensor import TensorSpec

__all__ = ["BusinessSignal", "check_signals", "signals_from_data"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class BusinessSignal:
    """One output watched as a business signal.

    Parameters
    ----------
    name
        What the signal is called in stats and metrics (letters, digits, ``_``).
    output
        The pipeline output it reads.
    values
        For a categorical signal, the values whose shares are tested for a shift (``None``: every value seen).
    above
        For a threshold signal, the score a row must exceed to count as ``"above"``.

    Examples
    --------
    >>> BusinessSignal("risk", "risk_bucket", values=("high",)).to_dict()
    {'name': 'risk', 'output': 'risk_bucket', 'values': ['high']}
    """

    name: str
    output: str
    values: tuple[str, ...] | None = None
    above: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"business signal name {self.name!r} must be letters, digits and '_' (not first a digit)")
        if not isinstance(self.output, str) or not self.output:
            raise ValueError(f"business signal {self.name!r} needs the output it reads")
        if self.values is not None:
            if isinstance(self.values, str) or not self.values:
                raise ValueError(f"business signal {self.name!r}: values must be a non-empty list of values")
            object.__setattr__(self, "values", tuple(str(v) for v in self.values))
        if self.above is not None:
            if self.values is not None:
                raise ValueError(f"business signal {self.name!r}: give values (categorical) or above (threshold), "
                                 "not both")
            if isinstance(self.above, bool) or not isinstance(self.above, int | float) or not math.isfinite(
                    self.above):
                raise ValueError(f"business signal {self.name!r}: above must be a finite number")
            object.__setattr__(self, "above", float(self.above))

    @property
    def kind(self) -> str:
        """``"threshold"`` (a score above ``above``) or ``"categorical"`` (each value)."""
        return "threshold" if self.above is not None else "categorical"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "output": self.output}
        if self.values is not None:
            data["values"] = list(self.values)
        if self.above is not None:
            data["above"] = self.above
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BusinessSignal:
        if not isinstance(data, Mapping):
            raise SpecError(f"a business signal is a mapping such as {{name: risk, output: risk_bucket}}, not {data!r}")
        unknown = set(data) - {"name", "output", "values", "above"}
        if unknown:
            raise SpecError(f"business signal {data.get('name')!r}: unknown keys {sorted(unknown)}")
        try:
            values = data.get("values")
            return cls(str(data.get("name", data.get("output", ""))), str(data.get("output", "")),
                       values=tuple(values) if isinstance(values, list) else values, above=data.get("above"))
        except ValueError as exc:
            raise SpecError(str(exc)) from exc


def signals_from_data(data: Any) -> list[BusinessSignal]:
    """The ``business:`` entry of a pipeline file (a list of signals) as :class:`BusinessSignal` objects."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise SpecError("'business' must be a list of signals such as [{name: risk, output: risk_bucket}]")
    return [BusinessSignal.from_dict(entry) for entry in data]


def check_signals(pipeline: str, signals: Sequence[BusinessSignal], outputs: Mapping[str, TensorSpec]) -> None:
    """Fail, naming the output, when a signal reads no output of the pipeline or one of the wrong kind."""
    names = [s.name for s in signals]
    for signal in signals:
        if names.count(signal.name) > 1:
            raise PipelineWiringError(f"two business signals are named {signal.name!r}", tensor=signal.output)
        spec = outputs.get(signal.output)
        if spec is None:
            raise PipelineWiringError(
                f"business signal {signal.name!r} reads output {signal.output!r}, which pipeline {pipeline!r} does "
                f"not return; its outputs: {sorted(outputs)}", tensor=signal.output)
        rank_ok = spec.shape is None or len(spec.shape) == 1
        kind = spec.numpy_dtype.kind
        if signal.kind == "threshold" and not (rank_ok and kind == "f"):
            raise PipelineWiringError(
                f"business signal {signal.name!r}: output {signal.output!r} is {spec.text()}, and a threshold "
                "(above) needs one float score per row", tensor=signal.output)
        if signal.kind == "categorical" and not (rank_ok and kind in "OUSiub"):
            raise PipelineWiringError(
                f"business signal {signal.name!r}: output {signal.output!r} is {spec.text()}, and a categorical "
                "signal needs one label per row (strings or integers); for a score, give 'above'",
                tensor=signal.output)
