"""Recipes: YAML pipelines of stages (train, evaluate, report) run by ``alignkit run``.

A recipe names a base ``model``, an ``output_dir`` and a list of ``stages``. Each stage has a
``name`` (its directory under output_dir) and a ``method``: a training method of
``alignkit/train/registry.py`` (``sft``, ``rm``, ``dpo``, ``kto``, ``ppo``, ...; any field of its config),
``eval``, ``report``, ``sample-rank`` (preference pairs from a model's samples ranked by a reward,
``eval/ranked_pairs.py``) or ``frontier`` (reward against KL of several policies, ``eval/frontier.py``).
Any field may say ``stage:NAME`` for what a previous stage made (the model it trained, or the file
a ``sample-rank`` stage wrote), and a model field ``base`` for the recipe's model.
``defaults`` apply to every training stage, and a recipe-level ``data`` / ``eval_data`` is
what stages (and eval prompts) use unless they name their own — so ``alignkit run RECIPE
--data FILE`` points a whole pipeline at other data. See recipes/*.yaml.

Started again in the same output_dir, a recipe goes on where it stopped: a stage that finished
with the same settings (and the same stages before it) is reused, not rerun; ``fresh=True``
(``alignkit run --fresh``) reruns every stage (``stage_record.py``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import yaml

from alignkit.memory import peak_rss_gb, release_freed_memory, reset_peak_rss
from alignkit.stage_record import drop_checkpoints, mark_done, mark_running, read_record, stage_fingerprint
from alignkit.train.allocator import return_freed_memory
from alignkit.train.registry import METHODS

log = logging.getLogger(__name__)

class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and stage."""


class StageError(RecipeError):
    """A stage that failed on a ValueError (a setting that cannot work with this data, no rows
    to write, ...): the message names the stage and says what went wrong; the original is its
    ``__cause__``."""


def load_recipe(path: str | Path, overrides: dict | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        bundled = Path(__file__).resolve().parent.parent / "recipes" / f"{path.stem}.yaml"
        if not bundled.exists():
            raise RecipeError(f"{path}: no such recipe")
        path = bundled
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("stages"), list):
        raise RecipeError(f"{path}: a recipe is a mapping with a 'stages' list")
    recipe["_file"] = str(path)
    for key, value in (overrides or {}).items():
        if value is not None:
            recipe[key] = value
    return recipe


class Pipeline:
    def __init__(self, recipe: dict, fresh: bool = False):
        self.recipe = recipe
        self.fresh = fresh  # rerun every stage, whatever a previous run in output_dir finished
        self.out = Path(recipe.get("output_dir", "runs/recipe"))
        self.base = recipe.get("model", "smollm2-135m-instruct")
        self.results: dict[str, dict] = {}

    def model_path(self, ref: str | None) -> str:
        """``stage:NAME`` → that stage's saved model; ``base``/None → the recipe's model."""
        if ref in (None, "base"):
            return self.base
        if isinstance(ref, str) and ref.startswith("stage:"):
            stage = ref.split(":", 1)[1]
            return self.results.get(stage, {}).get("path") or str(self.out / stage / "model")
        return ref

    def resolve(self, value):
        """``stage:NAME`` references in a field (or a list field) → paths; anything else unchanged."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return self.model_path(value) if isinstance(value, str) and value.startswith("stage:") else value

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        previous = ""  # the fingerprint of the stage before: a changed stage reruns every stage after it
        for stage in self.recipe["stages"]:
            stage = dict(stage)
            name, method = stage.pop("name", None), stage.pop("method", None)
            if not name or not method:
                raise RecipeError(f"{self.recipe['_file']}: every stage needs a name and a method: {stage}")
            resolved = {k: self.resolve(v) for k, v in stage.items()}
            fingerprint = previous = stage_fingerprint(self.recipe, method, resolved, previous)
            record = None if self.fresh else read_record(self.out / name)
            same = record is not None and record.get("fingerprint") == fingerprint
            if same and record.get("status") == "done":
                log.info("stage %s: done in a previous run (reused)", name)
                self.results[name] = record["result"] | {"reused": True}
                continue
            if same:  # stopped midway with these very settings: training goes on from its newest checkpoint
                log.info("stage %s: unfinished in a previous run, running it again", name)
                if method in METHODS:
                    stage["resume"] = True
            else:
                drop_checkpoints(self.out / name)
            mark_running(self.out / name, fingerprint)
            log.info("stage %s (%s)", name, method)
            # The last stage's freed pages must not count toward this one's peak; a training stage
            # turns the allocator's slack back on for itself (train/allocator.py).
            return_freed_memory()
            release_freed_memory()
            reset_peak_rss()
            started = time.perf_counter()
            try:
                self.results[name] = self.run_stage(name, method, stage)
            except RecipeError:
                raise  # already names the file and the stage
            except ValueError as exc:
                raise StageError(f"stage {name!r} ({method}) failed: {exc}") from exc
            self.results[name].update(peak_rss_gb=round(peak_rss_gb(), 3), seconds=round(time.perf_counter() - started, 1))
            mark_done(self.out / name, fingerprint, self.results[name])
        summary = self.summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return self.out

    def run_stage(self, name: str, method: str, stage: dict) -> dict:
        if method in METHODS:
            return self.train(name, method, stage)
        if method == "eval":
            return self.evaluate(name, stage)
        if method == "report":
            return self.report(stage)
        if method == "sample-rank":
            return self.sample_rank(name, stage)
        if method in ("cai-revise", "cai-label"):
            from alignkit.cai.stage import run_cai_stage

            return run_cai_stage(self, name, method, stage)
        if method == "frontier":
            from alignkit.eval.frontier import run_frontier_stage

            return run_frontier_stage(self, name, stage)
        raise RecipeError(f"{self.recipe['_file']}: stage {name!r}: unknown method {method!r}")

    def train(self, name: str, method: str, fields: dict) -> dict:
        spec = METHODS[method]
        shared = {k: self.recipe[k] for k in ("data", "eval_data") if self.recipe.get(k)}
        values = {k: self.resolve(v) for k, v in {**shared, **self.recipe.get("defaults", {}), **fields}.items()}
        values["model"] = self.model_path(values.get("model"))
        values["output_dir"] = str(self.out / name)
        try:
            cfg = spec.config(**values)
        except Exception as exc:  # pydantic's ValidationError, reported with the stage
            raise RecipeError(f"{self.recipe['_file']}: stage {name!r}: {exc}") from None
        return spec.run(cfg) | {"config": cfg.model_dump()}

    def sample_rank(self, name: str, fields: dict) -> dict:
        from alignkit.eval.ranked_pairs import SampleRankConfig, write_ranked_pairs

        values = {k: self.resolve(v) for k, v in {**self.recipe.get("defaults", {}), **fields}.items()}
        values["model"] = self.model_path(values.get("model"))
        try:
            cfg = SampleRankConfig(**values)
        except Exception as exc:  # pydantic's ValidationError, reported with the stage
            raise RecipeError(f"{self.recipe['_file']}: stage {name!r}: {exc}") from None
        return write_ranked_pairs(cfg, self.out / name / "pairs.jsonl")

    def evaluate(self, name: str, fields: dict) -> dict:
        from alignkit.eval.stage import run_eval_stage

        return run_eval_stage(self, name, fields)

    def report(self, fields: dict) -> dict:
        from alignkit.eval.report import write_report
        from alignkit.train.logger import read_metrics

        evals = [r for r in self.results.values() if "eval_results" in r]
        if not evals:
            raise RecipeError(f"{self.recipe['_file']}: a report stage needs an eval stage before it")
        last = evals[-1]
        curve_stage = fields.get("curves", last["policies"][0])
        metrics_file = self.out / str(curve_stage) / "metrics.jsonl"
        rows = read_metrics(metrics_file) if curve_stage and metrics_file.exists() else []
        path = write_report(self.out, metrics_rows=rows, eval_results=last["eval_results"][last["policies"][0]],
                            ablation=last.get("ablation"), title=self.recipe.get("name", "alignkit report"))
        return {"report": str(path)}

    def summary(self) -> dict:
        """The numbers a user checks first: win rate with its interval, held-out accuracy."""
        summary: dict = {"recipe": self.recipe.get("name"), "output_dir": str(self.out)}
        peaks = {name: result["peak_rss_gb"] for name, result in self.results.items() if "peak_rss_gb" in result}
        if peaks:  # the process's peak is the largest stage peak (each stage starts from a reset)
            summary.update(peak_rss_gb=max(peaks.values()), peak_rss_gb_by_stage=peaks)
        summary["seconds_by_stage"] = {name: result["seconds"] for name, result in self.results.items() if "seconds" in result}
        reused = [name for name, result in self.results.items() if result.get("reused")]
        if reused:  # their numbers (seconds, peaks, evals) are from the run that made them
            summary["reused_stages"] = reused
        for name, result in self.results.items():
            if "eval_results" in result:
                policy = result["policies"][0]
                first = result["eval_results"][policy]
                summary.update(win_rate=first["win_rate"], kl=first.get("kl"), length=first.get("length"),
                               policy_model=self.model_path(f"stage:{policy}") if policy in self.results else policy)
                refusals = first.get("refusal_rate") or {}
                if "harmful" in refusals or "benign" in refusals:
                    summary["refusal"] = {
                        **{tag: refusals[tag]["policy"] for tag in ("harmful", "benign") if tag in refusals},
                        **{f"n_{tag}": refusals[tag]["n"] for tag in ("harmful", "benign") if tag in refusals},
                        "base": {tag: refusals[tag]["base"] for tag in ("harmful", "benign") if tag in refusals},
                    }
                if first.get("judge_provenance"):
                    summary["judge_provenance"] = first["judge_provenance"]["statement"]
                if result.get("ablation"):
                    summary["ablation"] = result["ablation"]
            elif "eval" in result and result["eval"]:
                for key in ("eval/rewards/accuracies", "eval/accuracy"):
                    if key in result["eval"]:
                        summary.setdefault("heldout_accuracy", {})[name] = result["eval"][key]
                if "eval/pass@1" in result["eval"]:  # online methods with a verifier: before and after
                    summary.setdefault("heldout_pass@1", {})[name] = {
                        when: {k: evaluation[f"eval/pass@1{k}"] for k in ("", "/ci_low", "/ci_high")}
                        for when, evaluation in (("before", result.get("eval_on_start") or {}), ("after", result["eval"]))
                        if "eval/pass@1" in evaluation}
            if "report" in result:
                summary["report"] = result["report"]
        return summary


def run_recipe(path: str | Path, fresh: bool = False, **overrides) -> Path:
    return Pipeline(load_recipe(path, overrides), fresh=fresh).run()
