"""Dask's housekeeping cadence for a LocalCluster of our own: coarser than Dask's defaults, unless the user set it."""

from __future__ import annotations

import dask.config

from workbench.backend.dask import HOUSEKEEPING, housekeeping_config


def test_every_setting_is_a_key_dask_knows_and_coarser_than_its_default() -> None:
    shipped = dask.config.merge(*dask.config.defaults)
    for key, value in HOUSEKEEPING.items():
        default = dask.config.get(key, config=shipped)
        assert dask.utils.parse_timedelta(value) > dask.utils.parse_timedelta(default), key


def test_a_value_the_user_configured_wins() -> None:
    assert housekeeping_config() == HOUSEKEEPING
    with dask.config.set({"distributed.admin.tick.interval": "5ms"}):
        chosen = housekeeping_config()
    assert "distributed.admin.tick.interval" not in chosen
    assert chosen == {k: v for k, v in HOUSEKEEPING.items() if k != "distributed.admin.tick.interval"}
