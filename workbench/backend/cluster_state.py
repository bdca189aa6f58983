"""What the fronts of one cluster share: deployments and their knobs, kept with the scheduler, one change at a time.

Every process serving from the same Dask cluster (a *front*) sees the same
deployments. Their state lives in the scheduler's metadata, under
:data:`METADATA_KEY`, one entry per deployment::

    {"spec": ..., "generation": 3, "placement": "auto", "latency_target_ms": 1000.0,
     "batching": {"max_batch_size": 32, "max_delay_ms": 5.0, "mode": "dynamic"}, "version": 17}

A change is applied *on the scheduler*, by one function run in its event loop
(``client.run_on_scheduler``): nothing else runs there meanwhile, so a change
never reads a state that another change is about to overwrite. It writes only
the fields it changes (two fronts moving two knobs of one pipeline at the same
moment both hold), a swap is a compare-and-set on the generation (the second of
two concurrent swaps is refused, not silently lost), and each change bumps the
deployment's ``version`` and announces itself on the :data:`TOPIC` event topic
in the same step. A front that hears of another's change reads the state back
and applies it.

The function is built by :func:`_scheduler_change`, nested, so that it travels
by value: the scheduler needs no workbench installed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["METADATA_KEY", "TOPIC", "Refused", "change_on_scheduler", "reserve_generation"]

#: Where deployments are kept in the scheduler's metadata.
METADATA_KEY = "workbench-deployments"
#: The event topic on which each change is announced.
TOPIC = "workbench-state"


class Refused(Exception):
    """A compare-and-set found another generation than the one it expected."""

    def __init__(self, name: str, expected: int | None, found: int | None) -> None:
        super().__init__(f"deployment {name!r} is at generation {found}, not {expected}: another front changed it")
        self.found = found


def _scheduler_change() -> Callable[..., dict[str, Any]]:
    """The function the scheduler runs for one change (see the module docstring)."""

    def change(dask_scheduler: Any, key: str, topic: str, name: str, origin: str,
               replace: dict[str, Any] | None, fields: list[tuple[list[str], Any]], delete: bool,
               expect_generation: int | None, reserve: bool) -> dict[str, Any]:
        root = dask_scheduler.task_metadata.setdefault(key, {})
        current = root.get(name)
        if reserve:  # NOTE: a generation number no other front will build, announced to nobody
            if not isinstance(current, dict):
                return {"ok": False, "generation": None}
            reserved = max(current.get("reserved", 0), current.get("generation", 0)) + 1
            current["reserved"] = reserved
            return {"ok": True, "version": current.get("version", 0), "reserved": reserved}
        if expect_generation is not None:
            found = current.get("generation") if isinstance(current, dict) else None
            if found != expect_generation:
                return {"ok": False, "generation": found}
        version = (current.get("version", 0) if isinstance(current, dict) else 0) + 1
        if delete:
            root.pop(name, None)
        else:
            state = dict(replace) if replace is not None else (current if isinstance(current, dict) else {})
            if replace is not None and isinstance(current, dict) and "reserved" in current:
                state["reserved"] = current["reserved"]
            for path, value in fields:
                node = state
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = value
            state["version"] = version
            root[name] = state
        dask_scheduler.log_event(topic, {"deployment": name, "origin": origin, "version": version, "deleted": delete})
        return {"ok": True, "version": version}

    return change


_CHANGE = _scheduler_change()


async def change_on_scheduler(client: Any, name: str, origin: str, *, replace: Mapping[str, Any] | None = None,
                              fields: Mapping[str, Any] | None = None, delete: bool = False,
                              expect_generation: int | None = None) -> int:
    """Apply one change to ``name``'s shared state on the scheduler; returns its new version.

    ``replace``: the whole state (a deploy); ``fields``: dotted paths to new values
    (``{"batching.max_batch_size": 8}``), set over the current state; ``delete``: drop it.
    With ``expect_generation``, the change applies only while the generation is that one,
    and :class:`Refused` is raised otherwise.
    """
    paths = [(path.split("."), value) for path, value in (fields or {}).items()]
    result = await client.run_on_scheduler(
        _CHANGE, key=METADATA_KEY, topic=TOPIC, name=name, origin=origin,
        replace=dict(replace) if replace is not None else None, fields=paths, delete=delete,
        expect_generation=expect_generation, reserve=False)
    if not result["ok"]:
        raise Refused(name, expect_generation, result["generation"])
    return int(result["version"])


async def reserve_generation(client: Any, name: str) -> int:
    """A generation number for ``name`` that no other front will build (a swap builds it, then publishes it)."""
    result = await client.run_on_scheduler(
        _CHANGE, key=METADATA_KEY, topic=TOPIC, name=name, origin="", replace=None, fields=[], delete=False,
        expect_generation=None, reserve=True)
    if not result["ok"]:
        raise Refused(name, None, None)
    return int(result["reserved"])
