"""One entry point: ``alignkit <command>``.

The training commands (sft, rm, dpo, kto, and whatever else ``alignkit/train/registry.py``
lists) are generated from the method registry: one flag per config field, so the CLI, YAML
configs and the Python API take exactly the same settings.
"""

from __future__ import annotations

import logging
import os
import sys

import click

# --- training commands, generated from the method registry ------------------------------------
# Each registered method (alignkit/train/registry.py) becomes `alignkit <name>` with one flag per
# field of its pydantic config: `--field-name`, the field's docstring as help, Literal types as
# choices, bools as --x/--no-x, lists as repeatable flags, and "none" accepted where None is.

_NONE = object()  # "none" given for an optional field: an explicit None, unlike a flag not given


class _OrNone(click.ParamType):
    """A value of ``inner`` or the word ``none`` (for fields that may be None)."""

    def __init__(self, inner: click.ParamType):
        self.inner, self.name = inner, f"{inner.name}|none"

    def convert(self, value, param, ctx):
        if value is _NONE or (isinstance(value, str) and value.lower() in ("none", "null")):
            return _NONE
        return self.inner.convert(value, param, ctx)

    def get_metavar(self, param, ctx=None):
        return f"{self.inner.name.upper()}|none"


class _LiteralChoice(click.Choice):
    """click.Choice over a Literal's values, giving back the value itself (not its string)."""

    def __init__(self, values: tuple):
        self.values = {str(v): v for v in values}
        super().__init__(list(self.values))

    def convert(self, value, param, ctx):
        return self.values[super().convert(str(value), param, ctx)]


def _param_type(annotation) -> click.ParamType:
    from typing import Literal, get_args, get_origin

    if get_origin(annotation) is Literal:
        return _LiteralChoice(get_args(annotation))
    return {int: click.INT, float: click.FLOAT, str: click.STRING}.get(annotation, click.STRING)


def config_options(config_cls) -> list[click.Option]:
    """One click option per field of a pydantic config class (what a training command takes)."""
    import types
    import typing

    from pydantic_core import PydanticUndefined

    from alignkit.train.config import RunConfig

    # The method's own fields first (what `alignkit dpo --help` is usually opened for), then the shared ones.
    fields = sorted(config_cls.model_fields.items(), key=lambda item: item[0] in RunConfig.model_fields)
    options = []
    for name, field in fields:
        annotation = field.annotation
        args = typing.get_args(annotation)
        optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
        if optional:
            rest = [a for a in args if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else str
        flag = "--" + name.replace("_", "-")
        default = field.default if field.default is not PydanticUndefined else None
        shown = ", ".join(map(str, default)) if isinstance(default, list) else default
        shown = "none" if shown in (None, "") else shown
        help_text = f"{field.description or ''} [default: {shown}]".strip()
        if annotation is bool:
            options.append(click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text))
        elif typing.get_origin(annotation) is list:
            (item,) = typing.get_args(annotation) or (str,)
            options.append(click.Option([flag, name], multiple=True, type=_param_type(item),
                                        help=f"{help_text} Repeat the flag for several values."))
        else:
            param_type = _param_type(annotation)
            options.append(click.Option([flag, name], type=_OrNone(param_type) if optional else param_type,
                                        help=help_text))
    return options


def training_command(name: str, spec) -> click.Command:
    """``alignkit <name>``: the method's config from --config FILE.yaml and flags (flags win), then its run."""

    def callback(config_file, **flags) -> None:
        from alignkit.train.registry import METHODS

        _run_training(METHODS[name], config_file, flags)  # looked up at call time: tests swap runners

    params = [click.Option(["--config", "config_file"], type=click.Path(exists=True, dir_okay=False),
                           help="YAML file of fields; flags override it."), *config_options(spec.config)]
    return click.Command(name, callback=callback, params=params, help=spec.summary, short_help=spec.summary)


def _build_config(cls, config_file, flags: dict):
    from alignkit.train.config import ConfigError, make_config, read_config_file

    given = {}
    for key, value in flags.items():
        if value is None or value == ():  # not on the command line
            continue
        given[key] = None if value is _NONE else list(value) if isinstance(value, tuple) else value
    try:
        values = read_config_file(config_file) if config_file else {}
        return make_config(cls, {**values, **given}, config_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _run_training(spec, config_file, flags):
    from alignkit.data.errors import DataError
    from alignkit.train.checkpoint import CheckpointError
    from alignkit.train.guards import StepFaultError

    cfg = _build_config(spec.config, config_file, flags)
    try:
        summary = spec.run(cfg)
    except (DataError, StepFaultError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # a setting that cannot work with this data ("fewer than one batch", ...)
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise  # -v: the traceback, for a bug report
        raise click.ClickException(f"{exc} (run with -v for the traceback)") from None
    if os.environ.get("RANK", "0") == "0":  # once, not once per process under torchrun
        click.echo(f"run directory: {cfg.output_dir}")
    return summary


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, and transformers' load reports and progress bars.")
def app(verbose: bool) -> None:
    """alignkit: align language models with preferences, and measure whether it worked."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        _quiet_libraries()


def _quiet_libraries() -> None:
    """Without -v: transformers' load reports (e.g. the reward model's fresh `score` head, which is
    expected) and its loading / saving progress bars stay hidden; warnings from alignkit do not."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


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
@click.option("--data-format", default="auto", show_default=True, type=click.Choice(["auto", "trl", "hh-rlhf", "ultrafeedback"]),
              help="Schema of a preference file (auto: recognised from the first row).")
def data_inspect(path: str, n: int, kind: str, model: str, data_format: str) -> None:
    """Show N rows side by side with token counts, then a summary table.

    Exits 1 when any row is invalid (or the file cannot be read), so it can guard a pipeline."""
    from rich.console import Console

    from alignkit.data.errors import DataError
    from alignkit.data.inspect import inspect_file
    from alignkit.models import load_tokenizer

    try:
        summary = inspect_file(path, kind=kind, n=n, tokenizer=load_tokenizer(model), console=Console(), data_format=data_format)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    if summary["invalid"]:
        raise click.ClickException(f"{summary['invalid']} of {summary['rows']} rows are invalid; first: {summary['invalid_examples'][0]}")


@app.command("run")
@click.argument("recipe")
@click.option("--output-dir", help="Override the recipe's output_dir.")
@click.option("--model", help="Override the recipe's base model.")
@click.option("--data", help="Override the recipe's training data (every stage that does not name its own).")
@click.option("--eval-data", help="Override the recipe's held-out data / eval prompts.")
@click.option("--fresh", is_flag=True, help="Rerun every stage. Without it, a stage that finished in output_dir "
              "with the same settings (and the same stages before it) is reused, and an unfinished one resumes.")
def run_recipe_command(recipe: str, fresh: bool, **overrides) -> None:
    """Run a YAML pipeline (a path, or the name of a bundled recipe in recipes/).

    Started again, it goes on where it stopped (--fresh: from the first stage)."""
    _run_recipe(recipe, fresh=fresh, **overrides)


@app.command()
@click.option("--output-dir", help="Where the run goes (default runs/quickstart).")
def quickstart(output_dir: str | None) -> None:
    """SFT and refusal training on the bundled model and data, judged against the base model, with an HTML report (recipes/quickstart.yaml)."""
    _run_recipe("quickstart", output_dir=output_dir, model=None)


@app.command("eval")
@click.option("--policy", required=True, multiple=True, help="Model(s) to evaluate: a run's model/ directory, a hub id or an alias.")
@click.option("--baseline", default="smollm2-135m-instruct", show_default=True, help="The model each policy is compared with.")
@click.option("--judge", multiple=True, help="A reward model directory, a chat model (LLM judge), an endpoint URL (http://host/v1[#model]), "
              "or constitution:MODEL; repeat for several judges (their agreement is reported). Without one: no win rate.")
@click.option("--judge-api-key-env", help="Environment variable holding an endpoint judge's API key.")
@click.option("--sycophancy", is_flag=True, help="Also run the bundled sycophancy probe on the baseline and each policy.")
@click.option("--prompts", default="hhh:test", show_default=True, help="Held-out prompts: a prompt or preference file, or hhh:test.")
@click.option("--limit", type=int, help="Use a seeded random sample of N prompts (in file order).")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--kl-prompts", type=int, help="Estimate KL on N of the prompts, spread over the file (default: all).")
@click.option("--output-dir", default="runs/eval", show_default=True)
def eval_command(policy, baseline, judge, judge_api_key_env, sycophancy, prompts, limit, max_new_tokens, kl_prompts,
                 output_dir) -> None:
    """Win rate (judge asked in both orders, 95% CI), KL, length drift, diversity, refusals, and a report."""
    recipe = {
        "name": "eval", "model": baseline, "output_dir": output_dir, "_file": "alignkit eval",
        "stages": [
            {"name": "eval", "method": "eval", "policies": list(policy), "judge": list(judge), "prompts": prompts,
             "limit": limit, "max_new_tokens": max_new_tokens, "judge_api_key_env": judge_api_key_env,
             "sycophancy": sycophancy, "kl_prompts": kl_prompts},
            {"name": "report", "method": "report", "curves": None},
        ],
    }
    _run_pipeline(recipe, fresh=True)  # one stage of work, nothing earlier to save: asking again means measure again


@app.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback unless you mean otherwise).")
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port (the ready line gives it).")
@click.option("--api-key-env", help="Name of an environment variable holding the API key clients must send (as a Bearer token).")
@click.option("--served-model-name", help="The model id clients use (default: MODEL as given).")
@click.option("--max-batch", type=int, default=64, show_default=True, help="Sequences the engine decodes at once.")
@click.option("--max-n", type=int, default=16, show_default=True, help="Largest n a request may ask for.")
@click.option("--default-max-tokens", type=int, default=256, show_default=True, help="max_tokens when a request gives none.")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log each request (method, path, status) to stderr.")
def serve(model, host, port, api_key_env, served_model_name, max_batch, max_n, default_max_tokens, access_log) -> None:
    """OpenAI-compatible chat server for MODEL (a run's model/ directory, LoRA adapter, hub id or alias).

    Prints `serving MODEL at http://HOST:PORT/v1` once it accepts requests.
    """
    from alignkit.serve import build_app, read_api_key, run

    try:
        api_key = read_api_key(api_key_env)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    server_app = build_app(model, api_key=api_key, served_name=served_model_name, max_batch=max_batch, max_n=max_n,
                           default_max_tokens=default_max_tokens)
    run(server_app, host=host, port=port, shown_name=served_model_name or model, access_log=access_log)


def _run_recipe(recipe: str, fresh: bool = False, **overrides) -> None:
    from alignkit.pipeline import RecipeError, load_recipe

    try:
        loaded = load_recipe(recipe, overrides)
    except RecipeError as exc:
        raise click.ClickException(str(exc)) from None
    _run_pipeline(loaded, fresh)


def _run_pipeline(recipe: dict, fresh: bool = False) -> None:
    import json

    from alignkit.data.errors import DataError
    from alignkit.pipeline import Pipeline, RecipeError, StageError

    try:
        out = Pipeline(recipe, fresh=fresh).run()
    except StageError as exc:  # as `alignkit dpo` does for a ValueError: one line, the traceback under -v
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        raise click.ClickException(f"{exc} (run with -v for the traceback)") from None
    except (RecipeError, DataError) as exc:
        raise click.ClickException(str(exc)) from None
    summary = json.loads((out / "summary.json").read_text())
    win = summary.get("win_rate")
    if win:
        click.echo(f"win rate vs base: {win['win_rate']:.1%} (95% CI {win['ci_low']:.1%}-{win['ci_high']:.1%}, n={win['n']})")
    refusal = summary.get("refusal")
    if refusal:
        click.echo("refusals (aligned, base): " + ", ".join(
            f"{tag} {refusal[tag]:.0%} vs {refusal['base'][tag]:.0%} of {refusal[f'n_{tag}']}" for tag in ("harmful", "benign") if tag in refusal))
    for stage, acc in summary.get("heldout_accuracy", {}).items():
        click.echo(f"held-out preference accuracy ({stage}): {acc:.1%}")
    if summary.get("peak_rss_gb"):
        click.echo(f"peak memory: {summary['peak_rss_gb']:.2f} GB")
    for stage, runs in summary.get("heldout_pass@1", {}).items():
        click.echo(f"held-out pass@1 ({stage}): " + ", ".join(
            f"{when} {r['']:.1%} (95% CI {r['/ci_low']:.1%}-{r['/ci_high']:.1%})" for when, r in runs.items()))
    click.echo(str(out.resolve()))


def _add_training_commands() -> None:
    from alignkit.train.registry import METHODS

    for name, spec in METHODS.items():
        app.add_command(training_command(name, spec))


_add_training_commands()


def _add_ai_feedback_commands() -> None:
    from alignkit.cai.commands import cai  # click only at import: `alignkit --help` stays fast

    app.add_command(cai)


_add_ai_feedback_commands()


def _add_best_of_n_command() -> None:
    from alignkit.bon.commands import best_of_n_command  # click only at import

    app.add_command(best_of_n_command)


_add_best_of_n_command()


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="alignkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
