"""The ``workbench`` command line."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from workbench import __version__

if TYPE_CHECKING:
    from workbench.api import Workbench

_HOME = click.option("--home", type=click.Path(path_type=Path), default=None,
                     help="Workbench folder (models/ and pipelines/); default $WORKBENCH_HOME or ./.workbench.")


@click.group()
@click.version_option(__version__, prog_name="workbench")
def main() -> None:
    """Inference Workbench: build, explore, tune and serve staged inference pipelines."""


@main.group()
def models() -> None:
    """Build and list the models of the repository."""


@models.command("build")
@_HOME
@click.option("--only", multiple=True, help="Build only this demo (repeatable): tabular, text.")
@click.option("--force", is_flag=True, help="Rebuild even when up to date.")
def models_build(home: Path | None, only: tuple[str, ...], force: bool) -> None:
    """Build the demo models locally (nothing is downloaded)."""
    from workbench.demo import build_demo_models

    try:
        build_demo_models(home, only or None, force=force, log=click.echo)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@models.command("list")
@_HOME
def models_list(home: Path | None) -> None:
    """List models, variants, versions and expected quality."""
    from workbench.config import WorkbenchSettings
    from workbench.models import ModelRepository

    repository = ModelRepository((home or WorkbenchSettings().home) / "models")
    for model in repository.models():
        for variant in repository.variants(model):
            meta = repository.metadata(model, variant)
            size_mb = repository.path(model, variant).stat().st_size / 2**20
            quality = ", ".join(f"{k}={v:g}" for k, v in meta.quality.items()) or "-"
            click.echo(f"{model:<12} {variant:<10} v{meta.version}  {size_mb:7.1f} MB  {quality}")


@main.command()
@_HOME
@click.option("--workers", default=2, show_default=True, help="Dask worker processes of the local cluster.")
@click.option("--seconds", default=20.0, show_default=True, help="How long traffic flows.")
@click.option("--rate", default=150.0, show_default=True, help="Requests per second sent to each pipeline.")
@click.option("--pattern", type=click.Choice(["steady", "poisson", "surge", "diurnal"]), default="poisson",
              show_default=True, help="Shape of the traffic.")
def demo(home: Path | None, workers: int, seconds: float, rate: float, pattern: str) -> None:
    """Deploy both demo pipelines on a local Dask cluster, send them traffic and show live latency."""
    from workbench.api import Workbench
    from workbench.demo import build_demo_models

    build_demo_models(home, log=click.echo)
    requests = _demo_requests()
    with Workbench.local(workers=workers) as wb:
        info = wb.describe()
        click.echo(f"\nDask cluster: {len(info['workers'])} workers, scheduler {info.get('scheduler')}")
        click.echo(f"Dask dashboard: {info.get('dashboard_link')}")
        for name, make in requests.items():
            wb.deploy(name)
            inputs = make(8 if name == "tabular" else 4)
            click.echo(f"\n{name}: deployed, variants {wb.stats(name)['variants']}")
            _print_predictions(name, inputs, wb.predict(name, inputs).outputs)
        click.echo(f"\n{pattern} traffic at {rate:g} requests/s per pipeline for {seconds:g} s:")
        asyncio.run(_demo_traffic(wb, requests, seconds, rate, pattern))
        for name in requests:
            stats = wb.stats(name)
            click.echo(f"\n{name}: where the time goes (p50 per request, ms)")
            for key, value in stats["timings_ms"].items():
                click.echo(f"    {key:<16} {value['p50']:8.3f}")
            click.echo(f"    {'end to end':<16} {stats['latency_ms']['p50']:8.3f}  "
                       f"(p99 {stats['latency_ms']['p99']:.3f})")
            click.echo(f"    batch sizes: {stats['batch_size']['histogram']}")


def _demo_requests() -> dict[str, Callable[[int], dict[str, np.ndarray]]]:
    from workbench.demo.corpus import topic_sentences
    from workbench.demo.tabular import load_tabular_data

    rows = load_tabular_data().x_test
    sentences = np.array(topic_sentences("test")[0], dtype=object)
    rng = np.random.default_rng(0)
    return {
        "tabular": lambda n: {"features": rows[rng.integers(0, len(rows) - n + 1):][:n]},
        "text": lambda n: {"text": sentences[rng.integers(0, len(sentences), n)]},
    }


async def _demo_traffic(wb: Workbench, requests: dict[str, Callable[[int], dict[str, np.ndarray]]],
                        seconds: float, rate: float, pattern: str) -> None:
    from workbench.traffic import LoadGenerator

    generators = {
        name: LoadGenerator(functools.partial(wb.apredict, name), functools.partial(make, 1), pattern=pattern,
                            rate_rps=rate, period_s=max(seconds / 2, 1.0))
        for name, make in requests.items()
    }
    runs = [asyncio.create_task(g.run(seconds)) for g in generators.values()]
    while not all(run.done() for run in runs):
        await asyncio.wait(runs, timeout=1.0)
        for name in generators:
            stats = wb.stats(name)
            latency = stats["latency_ms"]
            click.echo(f"  {name:<8} p50 {latency['p50']:7.2f} ms  p95 {latency['p95']:7.2f}  "
                       f"p99 {latency['p99']:7.2f}  {stats['throughput_rps']:6.0f} req/s  "
                       f"batch {stats['batch_size']['mean']:5.1f}  queue {stats['queue_depth']:3d}")
    for name, generator in generators.items():
        summary = generator.report.summary()
        click.echo(f"  {name}: {summary['ok']} answered, {summary['failed']} failed of {summary['sent']} sent")


def _print_predictions(name: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    shown = [k for k, v in outputs.items() if v.ndim == 1]
    first = next(iter(inputs.values()))
    for i in range(len(first)):
        subject = (f"{str(first[i])[:60]!r}" if name == "text"
                   else f"row {i} ({int(np.isnan(first[i]).sum())} missing)")
        values = "  ".join(f"{k}={_fmt(outputs[k][i])}" for k in shown)
        click.echo(f"  {subject:<64} {values}")


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, (float, np.floating)) else str(value)


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, help="Port of the REST API, metrics and dashboard.")
@click.option("--scheduler", default=None, help="Use this Dask cluster (tcp://host:8786) instead of a local one.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Workers of the local cluster.")
@click.option("--inprocess", is_flag=True, help="Run batches in the server process (no Dask).")
@click.option("--token", default=None, help="Token for the control API [default: $WORKBENCH_TOKEN; generated "
                                            "when bound beyond loopback].")
@click.option("--timeout-ms", type=float, default=None, help="Default deadline of a request.")
@click.option("--max-body-mb", type=float, default=64.0, show_default=True, help="Largest request body.")
def serve(targets: tuple[str, ...], host: str, port: int, scheduler: str | None, workers: int, inprocess: bool,
          token: str | None, timeout_ms: float | None, max_body_mb: float) -> None:
    """Serve TARGETS (demo names or pipeline files) over the Open Inference Protocol on one port."""
    from workbench.serving.app import ServeConfig
    from workbench.serving.server import serve as run_server

    config = ServeConfig(default_timeout_ms=timeout_ms, max_body_bytes=int(max_body_mb * 2**20))
    run_server(list(targets), host=host, port=port, scheduler=scheduler, workers=workers, inprocess=inprocess,
               token=token, config=config, echo=click.echo)


@main.command()
@click.argument("pipeline")
@click.argument("source", metavar="INPUT")
@click.argument("destination", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Workers of the local cluster started for the run.")
@click.option("--scheduler", default=None,
              help="Run on this cluster (e.g. tcp://10.0.0.5:8786) instead; its deployed pipelines can be named.")
@click.option("--batch-size", type=int, default=None, help="Rows per pipeline call on a worker [default: 256].")
@click.option("--columns", default=None, help="Comma-separated columns that feed the input, e.g. f0,f1,f2.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT when it is a folder that is not empty.")
def batch(pipeline: str, source: str, destination: Path, workers: int, scheduler: str | None,
          batch_size: int | None, columns: str | None, overwrite: bool) -> None:
    """Map PIPELINE (demo name, pipeline file or deployed name) over INPUT into OUTPUT.

    INPUT is Parquet or CSV (a file, a folder or a quoted glob); OUTPUT is a folder of
    Parquet files with one row per input row, in the same order.
    """
    from workbench.api import Workbench
    from workbench.errors import WorkbenchError

    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    try:
        wb = Workbench.connect(scheduler) if scheduler else Workbench.local(workers=workers)
        with wb:
            report = wb.batch(pipeline, source, destination, batch_size=batch_size, columns=chosen,
                              overwrite=overwrite)
    except (WorkbenchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.summary())
    click.echo(f"rows={report.rows} seconds={report.seconds:.3f} rows_per_s={report.rows_per_s:.1f}")


if __name__ == "__main__":
    main()
