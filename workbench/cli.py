"""The ``workbench`` command line."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path

import click

from workbench import __version__

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


@models.command("add")
@_HOME
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--variant", default="default", show_default=True, help="Variant to store it as.")
@click.option("--notes", default="", help="Where the model comes from (kept in its metadata).")
def models_add(home: Path | None, name: str, file: Path, variant: str, notes: str) -> None:
    """Put the ONNX model FILE into the repository as NAME, and write a pipeline file that serves it."""
    from workbench.config import WorkbenchSettings
    from workbench.errors import WorkbenchError
    from workbench.models import ModelRepository
    from workbench.pipeline.autocomplete import add_served

    settings = WorkbenchSettings() if home is None else WorkbenchSettings(home=home)
    repository = ModelRepository(settings.home / "models")
    try:
        pipeline_file, pipeline = add_served(repository, settings.pipelines_dir, name, file, variant=variant,
                                             notes=notes, keep_pipeline_file=True)
    except WorkbenchError as exc:
        raise click.ClickException(str(exc)) from exc
    meta = repository.metadata(name, variant)
    click.echo(f"{name} {variant} v{meta.version}: {repository.path(name, variant)}")
    for spec in pipeline.input_specs.values():
        click.echo(f"  input  {spec.name} {spec.text()}")
    for stage_spec in pipeline.output_specs.values():
        click.echo(f"  output {stage_spec.name} {stage_spec.text()}")
    click.echo(f"serve it: workbench serve {name}  (pipeline file {pipeline_file})")


@main.command()
@_HOME
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, help="Port of the REST API and dashboard (0: any free one).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Dask worker processes of the local cluster.")
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds and print a summary [default: run until interrupted].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=150.0, show_default=True,
              help="Requests per second sent to each pipeline.")
@click.option("--pattern", type=click.Choice(["steady", "poisson", "surge", "diurnal"]), default="poisson",
              show_default=True, help="Shape of the traffic.")
@click.option("--period", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds per cycle of the surge and diurnal patterns.")
@click.option("--only", multiple=True, help="Serve only this demo (repeatable): tabular, text, search.")
def demo(home: Path | None, host: str, port: int, workers: int, duration: float | None, rate: float, pattern: str,
         period: float, only: tuple[str, ...]) -> None:
    """Serve both demo pipelines on a local Dask cluster with traffic flowing; print the dashboard URL and live latency.

    The REST API, metrics and dashboard share one port; the traffic lab sends the
    traffic (through the engine, as the dashboard's traffic lab does). Runs until
    interrupted, or for --duration seconds, then prints a summary.
    """
    from workbench.demo import DEMOS, build_demo_models
    from workbench.demo.run import DemoRun
    from workbench.serving.app import is_loopback
    from workbench.serving.server import serve as run_server

    if home is not None:
        os.environ["WORKBENCH_HOME"] = str(home)
    try:
        build_demo_models(home, only or None, log=click.echo)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    names = list(only) if only else list(DEMOS)
    port = port or _free_port(host)
    token = os.environ.get("WORKBENCH_TOKEN")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    run = DemoRun(names, f"http://{host}:{port}", duration_s=duration, pattern=pattern, rate_rps=rate,
                  period_s=period, echo=click.echo, token=token)
    # NOTE: Ctrl-C stops the server gracefully, then comes back as KeyboardInterrupt: the summary still follows.
    with contextlib.suppress(KeyboardInterrupt):
        run_server(names, host=host, port=port, workers=workers, token=token, echo=click.echo,
                   on_ready=run.on_ready)
    run.summary()
    if run.error is not None:
        raise click.ClickException(f"the demo failed: {run.error}")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


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
@click.option("--protect-inference", is_flag=True,
              help="Require the token for V2 inference, model metadata and /metrics too.")
@click.option("--timeout-ms", type=float, default=None, help="Default deadline of a request.")
@click.option("--latency-budget-ms", default=None, metavar="MS|none",
              help="p99 latency each pipeline is held to: requests beyond it get 429 with Retry-After "
                   "[default: $WORKBENCH_LATENCY_BUDGET_MS, else 1000]; 'none' turns it off.")
@click.option("--max-body-mb", type=float, default=64.0, show_default=True, help="Largest request body.")
@click.option("--dashboard/--no-dashboard", default=True, show_default=True,
              help="Serve the Panel dashboard at /dashboard.")
@click.option("--tls-ca-file", default=None, help="CA certificate of a Dask cluster that uses TLS.")
@click.option("--tls-cert", default=None, help="Client certificate for that cluster.")
@click.option("--tls-key", default=None, help="Client key for that cluster.")
def serve(targets: tuple[str, ...], host: str, port: int, scheduler: str | None, workers: int, inprocess: bool,
          token: str | None, protect_inference: bool, timeout_ms: float | None, latency_budget_ms: str | None,
          max_body_mb: float, dashboard: bool, tls_ca_file: str | None, tls_cert: str | None,
          tls_key: str | None) -> None:
    """Serve TARGETS over the Open Inference Protocol on one port.

    A target is a demo name, a pipeline file or name, an ONNX model file, or a folder of
    ONNX files: each model is added to the repository and served from its signature.
    """
    from workbench.config import WorkbenchSettings
    from workbench.errors import WorkbenchError
    from workbench.models import ModelRepository
    from workbench.pipeline.autocomplete import is_model_target, serve_files
    from workbench.serving.app import ServeConfig
    from workbench.serving.server import serve as run_server

    settings = WorkbenchSettings()
    try:
        targets = tuple(str(p) for t in targets for p in (
            serve_files([t], ModelRepository(settings.home / "models"), settings.pipelines_dir)
            if is_model_target(t) else [t]))
    except WorkbenchError as exc:
        raise click.ClickException(str(exc)) from exc

    security = None
    if tls_ca_file or tls_cert or tls_key:
        from workbench.backend.dask import tls_security

        security = tls_security(tls_ca_file, tls_cert, tls_key)
    config = ServeConfig(default_timeout_ms=timeout_ms, max_body_bytes=int(max_body_mb * 2**20), dashboard=dashboard,
                         protect_inference=protect_inference,
                         batching=None if latency_budget_ms is None else {"target_p99_ms": _budget(latency_budget_ms)})
    # NOTE: uvicorn stops gracefully on Ctrl-C (SIGINT), then raises the signal again for its caller: the
    # stop was asked for and done, so the command ends with status 0 rather than click's "Aborted!" (1).
    with contextlib.suppress(KeyboardInterrupt):
        run_server(list(targets), host=host, port=port, scheduler=scheduler, workers=workers, inprocess=inprocess,
                   token=token, security=security, config=config, echo=click.echo)


def _budget(value: str) -> float | None:
    """``--latency-budget-ms``: milliseconds > 0, or ``none``."""
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        budget = float(value)
    except ValueError:
        budget = float("nan")
    if not budget > 0:
        raise click.BadParameter(f"a number of milliseconds > 0, or 'none', not {value!r}",
                                 param_hint="--latency-budget-ms")
    return budget


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
