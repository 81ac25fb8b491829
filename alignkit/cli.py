"""One entry point: ``alignkit <command>``. Every training command takes the same core flags."""

from __future__ import annotations

import logging
import os
import sys

import click

TRAIN_OPTIONS = [
    click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="YAML file of fields; flags override it."),
    click.option("--model", help="Local HF directory, hub id, or alias (default: smollm2-135m-instruct)."),
    click.option("--data", help="Training data: JSONL/JSON/CSV/Parquet file, or the bundled name 'hhh'."),
    click.option("--eval-data", help="Held-out data in the same format."),
    click.option("--output-dir", help="Run directory (model, config, metrics.jsonl, summary.json)."),
    click.option("--max-steps", type=int, help="Optimizer steps (overrides --epochs)."),
    click.option("--epochs", type=float, help="Passes over the data."),
    click.option("--batch-size", type=int, help="Examples per optimizer step."),
    click.option("--grad-accum", type=int, help="Micro-batches per optimizer step."),
    click.option("--lr", type=float, help="Peak learning rate."),
    click.option("--seed", type=int, help="Seed for weights init, data order and sampling."),
    click.option("--max-length", type=int, help="Max prompt+response tokens."),
    click.option("--eval-every", type=int, help="Evaluate every N steps."),
    click.option("--save-every", type=int, help="Checkpoint every N steps."),
    click.option("--resume/--no-resume", default=None, help="Continue from the newest checkpoint in output-dir."),
    click.option("--skip-invalid/--no-skip-invalid", default=None, help="Skip malformed rows into a rejects file."),
    click.option("--lora-r", type=int, help="Train a LoRA adapter of this rank."),
    click.option("--merge-lora/--no-merge-lora", default=None, help="Save the adapter merged into the base."),
    click.option("--load-in-4bit/--no-load-in-4bit", default=None, help="QLoRA: 4-bit NF4 base under the LoRA adapter (needs bitsandbytes)."),
    click.option("--report-to", multiple=True, type=click.Choice(["tensorboard", "trackio", "mlflow", "wandb"]), help="Extra trackers."),
    click.option("--threads", type=int, help="torch CPU threads."),
]


def train_options(fn):
    for option in reversed(TRAIN_OPTIONS):
        fn = option(fn)
    return fn


def _build_config(cls, config_file, flags: dict):
    from alignkit.train.config import ConfigError, load_config

    flags = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items()}
    flags = {k: v for k, v in flags.items() if v not in (None, [])}
    try:
        return load_config(cls, config_file, **flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _run_training(cls, runner, config_file, flags):
    from alignkit.data.errors import DataError

    cfg = _build_config(cls, config_file, flags)
    try:
        summary = runner(cfg)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    if os.environ.get("RANK", "0") == "0":  # once, not once per process under torchrun
        click.echo(f"run directory: {cfg.output_dir}")
    return summary


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def app(verbose: bool) -> None:
    """alignkit: align language models with preferences, and measure whether it worked."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
@click.option("--model", default="smollm2-135m-instruct", show_default=True)
@click.option("--prompt", default="How do I make fried rice?", show_default=True)
def doctor(model: str, prompt: str) -> None:
    """Print versions, load the model and generate a reply."""
    from rich.console import Console

    from alignkit.doctor import run_doctor

    run_doctor(model, prompt, Console())


@app.group()
def data() -> None:
    """Look at data before training on it."""


@data.command("inspect")
@click.argument("path")
@click.option("--n", default=5, show_default=True, help="Rows to show.")
@click.option("--kind", default="preference", show_default=True, type=click.Choice(["preference", "sft", "binary", "ranking", "prompt"]))
@click.option("--model", default="smollm2-135m-instruct", show_default=True, help="Tokenizer used for token counts.")
def data_inspect(path: str, n: int, kind: str, model: str) -> None:
    """Show N rows side by side with token counts, then a summary table."""
    from rich.console import Console

    from alignkit.data.errors import DataError
    from alignkit.data.inspect import inspect_file
    from alignkit.models import load_tokenizer

    try:
        inspect_file(path, kind=kind, n=n, tokenizer=load_tokenizer(model), console=Console())
    except DataError as exc:
        raise click.ClickException(str(exc)) from None


@app.command()
@train_options
@click.option("--loss", help="Preference objective: dpo, ipo, cdpo, rdpo, hinge, rpo, simpo or orpo.")
@click.option("--beta", type=float, help="Strength of the KL / implicit-reward scale.")
@click.option("--reference", type=click.Choice(["auto", "copy", "adapter", "precompute"]), help="How reference log-probs are obtained.")
def dpo(config_file, **flags) -> None:
    """Direct preference optimisation and its family (IPO, cDPO, hinge, RPO, SimPO, ORPO)."""
    from alignkit.train.dpo import DPOConfig, run_dpo

    _run_training(DPOConfig, run_dpo, config_file, flags)


@app.command()
@train_options
@click.option("--packing/--no-packing", default=None, help="Pack examples into rows without padding.")
def sft(config_file, **flags) -> None:
    """Supervised fine-tuning on demonstrations (loss on response tokens only)."""
    from alignkit.train.sft import SFTConfig, run_sft

    _run_training(SFTConfig, run_sft, config_file, flags)


@app.command()
@train_options
@click.option("--ensemble", type=int, help="Train N members with consecutive seeds.")
@click.option("--center-coef", type=float, help="Reward-centering coefficient.")
def rm(config_file, **flags) -> None:
    """Bradley-Terry reward model: a scalar head on the LM, trained on preference pairs."""
    from alignkit.train.rm import RMConfig, run_rm

    _run_training(RMConfig, run_rm, config_file, flags)


@app.command()
@train_options
@click.option("--beta", type=float, help="β of the implicit reward.")
@click.option("--desirable-weight", type=float, help="Weight of thumbs-up examples.")
@click.option("--undesirable-weight", type=float, help="Weight of thumbs-down examples.")
@click.option("--reference", type=click.Choice(["auto", "copy", "adapter", "precompute"]), help="How reference log-probs are obtained.")
def kto(config_file, **flags) -> None:
    """KTO on unpaired thumbs-up / thumbs-down feedback."""
    from alignkit.train.kto import KTOConfig, run_kto

    _run_training(KTOConfig, run_kto, config_file, flags)


@app.command("run")
@click.argument("recipe")
@click.option("--output-dir", help="Override the recipe's output_dir.")
@click.option("--model", help="Override the recipe's base model.")
@click.option("--data", help="Override the recipe's training data (every stage that does not name its own).")
@click.option("--eval-data", help="Override the recipe's held-out data / eval prompts.")
def run_recipe_command(recipe: str, **overrides) -> None:
    """Run a YAML pipeline (a path, or the name of a bundled recipe in recipes/)."""
    _run_recipe(recipe, **overrides)


@app.command()
@click.option("--output-dir", help="Where the run goes (default runs/quickstart).")
def quickstart(output_dir: str | None) -> None:
    """DPO with LoRA on the bundled model and data, evaluated, with an HTML report (recipes/quickstart.yaml)."""
    _run_recipe("quickstart", output_dir=output_dir, model=None)


@app.command("eval")
@click.option("--policy", required=True, multiple=True, help="Model(s) to evaluate: a run's model/ directory, a hub id or an alias.")
@click.option("--baseline", default="smollm2-135m-instruct", show_default=True, help="The model each policy is compared with.")
@click.option("--judge", help="A reward model directory (e.g. an `alignkit rm` run's model/); without one: no win rate.")
@click.option("--prompts", default="hhh:test", show_default=True, help="Held-out prompts: a prompt or preference file, or hhh:test.")
@click.option("--limit", type=int, help="Use only the first N prompts.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--output-dir", default="runs/eval", show_default=True)
def eval_command(policy, baseline, judge, prompts, limit, max_new_tokens, output_dir) -> None:
    """Win rate (judge asked in both orders, 95% CI), KL, length drift, diversity, refusals, and a report."""
    recipe = {
        "name": "eval", "model": baseline, "output_dir": output_dir, "_file": "alignkit eval",
        "stages": [
            {"name": "eval", "method": "eval", "policies": list(policy), "judge": judge, "prompts": prompts,
             "limit": limit, "max_new_tokens": max_new_tokens},
            {"name": "report", "method": "report", "curves": None},
        ],
    }
    _run_pipeline(recipe)


def _run_recipe(recipe: str, **overrides) -> None:
    from alignkit.pipeline import RecipeError, load_recipe

    try:
        loaded = load_recipe(recipe, overrides)
    except RecipeError as exc:
        raise click.ClickException(str(exc)) from None
    _run_pipeline(loaded)


def _run_pipeline(recipe: dict) -> None:
    import json

    from alignkit.data.errors import DataError
    from alignkit.pipeline import Pipeline, RecipeError

    try:
        out = Pipeline(recipe).run()
    except (RecipeError, DataError) as exc:
        raise click.ClickException(str(exc)) from None
    summary = json.loads((out / "summary.json").read_text())
    win = summary.get("win_rate")
    if win:
        click.echo(f"win rate vs base: {win['win_rate']:.1%} (95% CI {win['ci_low']:.1%}-{win['ci_high']:.1%}, n={win['n']})")
    for stage, acc in summary.get("heldout_accuracy", {}).items():
        click.echo(f"held-out preference accuracy ({stage}): {acc:.1%}")
    click.echo(str(out.resolve()))


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="alignkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
