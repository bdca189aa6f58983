"""Latency against throughput for ``bench_peers.py``: ``python plot.py OUT.png TITLE``, the series as JSON on stdin.

The series: ``{model: {server: [[connections, req/s, p50 ms, p99 ms], ...]}}``. One panel per
model; per server one colour, p50 solid and p99 dashed, each point marked with its connections.
Needs matplotlib only (``.venv`` has none: ``make peers`` puts it in the Ray venv).
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter


def main() -> None:
    series = json.load(sys.stdin)
    figure, axes = plt.subplots(1, len(series), figsize=(7 * len(series), 5.5), squeeze=False)
    for ax, (model, servers) in zip(axes[0], series.items()):
        for index, (server, points) in enumerate(servers.items()):
            colour = f"C{index}"
            conns, rate, p50, p99 = zip(*points)
            ax.plot(rate, p50, "o-", color=colour, label=f"{server} p50")
            ax.plot(rate, p99, "s--", color=colour, alpha=0.7, label=f"{server} p99")
            for c, x, y in zip(conns, rate, p99):
                ax.annotate(f"{c:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
        ax.set(xscale="log", yscale="log", xlabel="throughput, requests/s (log)", ylabel="latency, ms (log)",
               title=f"{model}: p50 (solid) and p99 (dashed) by offered load (connections, at p99 points)")
        ax.title.set_fontsize(9)
        for axis in (ax.xaxis, ax.yaxis):
            # NOTE: plain numbers at 1, 2 and 5 of each decade: the default labels of minor ticks overlap.
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    figure.suptitle(sys.argv[2] if len(sys.argv) > 2 else "", fontsize=9)
    figure.tight_layout()
    figure.savefig(sys.argv[1], dpi=110)


if __name__ == "__main__":
    main()
