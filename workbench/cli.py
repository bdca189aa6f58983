"""The ``workbench`` command line."""

from __future__ import annotations

import statistics
from pathlib import Path

import click
import numpy as np

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


@main.command()
@_HOME
@click.option("--rounds", default=50, show_default=True, help="Runs per input, for the timing medians.")
def demo(home: Path | None, rounds: int) -> None:
    """Build the demo models if needed, run both demo pipelines in-process and show where the time goes."""
    from workbench.demo import build_demo_models, demo_pipeline
    from workbench.demo.corpus import topic_sentences
    from workbench.demo.tabular import load_tabular_data

    build_demo_models(home, log=click.echo)
    data = load_tabular_data()
    sentences, _ = topic_sentences("test", per_topic=2, seed=1)
    requests = {
        "tabular": {"features": data.x_test[:8]},
        "text": {"text": np.array(sentences, dtype=object)},
    }
    for name, inputs in requests.items():
        pipeline = demo_pipeline(name, home)
        click.echo("")
        click.echo(repr(pipeline))
        providers = {s.name: s.provider for s in pipeline.inference_stages}
        click.echo(f"  execution providers: {providers}")
        result = pipeline.predict(inputs)
        _print_predictions(name, inputs, result.outputs)
        timings = [pipeline.predict(inputs).timings_ms for _ in range(rounds)]
        batch = len(next(iter(inputs.values())))
        click.echo(f"  per-stage median over {rounds} runs, batch of {batch}:")
        for key in timings[0]:
            click.echo(f"    {key:<12} {statistics.median(t[key] for t in timings):8.3f} ms")


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


if __name__ == "__main__":
    main()
