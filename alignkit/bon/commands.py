"""``alignkit best-of-n``: rejection sampling into an SFT dataset."""

from __future__ import annotations

import click


@click.command("best-of-n")
@click.option("--model", default="smollm2-135m-instruct", show_default=True, help="The policy to sample from (a run's model/, hub id or alias).")
@click.option("--prompts", required=True, help="Prompt file or bundled name (arith, arith-steps:problems, constraints, reviews); other columns reach the scorer.")
@click.option("--scorer", required=True, help="majority | a reward name (math = the verifier) | module:function | a directory saved by alignkit prm or alignkit rm.")
@click.option("--aggregate", type=click.Choice(["min", "last", "mean", "prod"]), help="A PRM's per-step aggregation (default: its prm.json's; min for a PRM).")
@click.option("--n", "n", type=int, default=8, show_default=True, help="Samples per prompt.")
@click.option("--output", required=True, help="SFT JSONL to write (prompt, completion, score, n, the prompt's columns).")
@click.option("--samples", help="Also write every sample with its score and whether it was kept (JSONL).")
@click.option("--min-score", type=float, help="Leave out prompts whose best score is below this (rejection).")
@click.option("--limit", type=int, help="Use only the first N prompts.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, help="torch intra-op threads.")
def best_of_n_command(model, prompts, scorer, aggregate, n, output, samples, min_score, limit, max_new_tokens, temperature,
                      top_p, seed, threads) -> None:
    """Sample N completions per prompt, keep the best by a scorer, write them as SFT data."""
    import torch

    from alignkit.bon.run import best_of_n, resolve_scorer, sft_rows, write_jsonl
    from alignkit.data.errors import DataError
    from alignkit.models import load_policy, load_tokenizer
    from alignkit.rollout import make_engine
    from alignkit.train.online import load_prompts

    if n < 1:
        raise click.ClickException(f"--n must be >= 1, got {n}")
    if threads:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(model)
    try:
        rows = load_prompts(prompts, tokenizer, max_prompt_length=1024)[:limit]
        chosen_scorer = resolve_scorer(scorer, aggregate=aggregate)
    except (DataError, ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    engine = make_engine(load_policy(model), tokenizer)
    choices = best_of_n(engine, chosen_scorer, rows, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, seed=seed)
    kept = sft_rows(choices, min_score=min_score)
    write_jsonl(kept, output)
    if samples:
        write_jsonl([{"prompt": c.prompt, "completion": t, "score": s, "kept": i == c.chosen, **c.columns}
                     for c in choices for i, (t, s) in enumerate(zip(c.texts, c.scores))], samples)
    click.echo(f"kept {len(kept)} of {len(choices)} prompts (best of {n} by {scorer}) -> {output}")
