"""The eval stage's statement of what the judge and the policy trained on, counted from the data."""

import json

from alignkit.eval.stage import judge_provenance, load_prompts, training_data
from alignkit.pipeline import Pipeline


def write_pairs(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p, "chosen": "yes", "rejected": "no"}) + "\n" for p in prompts))
    return str(path)


def pipeline_with(tmp_path, judge_data, sft_data, dpo_data):
    pipeline = Pipeline({"output_dir": str(tmp_path), "model": "base-model", "stages": []})
    pipeline.results = {
        "judge": {"config": {"model": "base-model", "data": judge_data}},
        "sft": {"config": {"model": "base-model", "data": sft_data}},
        "dpo": {"config": {"model": pipeline.model_path("stage:sft"), "data": dpo_data}},
    }
    return pipeline


def test_a_policy_chain_is_followed_back_to_the_base(tmp_path):
    pipeline = pipeline_with(tmp_path, "j.jsonl", "s.jsonl", "d.jsonl")
    assert training_data(pipeline, "stage:dpo") == (["sft", "dpo"], ["s.jsonl", "d.jsonl"])
    assert training_data(pipeline, "base") is None


def test_shared_prompts_are_counted_across_the_whole_chain(tmp_path):
    judge = write_pairs(tmp_path / "judge.jsonl", ["Q1", "q2  ", "Q3"])
    sft = write_pairs(tmp_path / "sft.jsonl", ["Q2", "Q4"])  # the SFT warm-up shares Q2 (case, spaces ignored)
    dpo = write_pairs(tmp_path / "dpo.jsonl", ["Q5"])
    held_out = load_prompts(write_pairs(tmp_path / "test.jsonl", ["Q3", "Q9"]))[0]
    facts = judge_provenance(pipeline_with(tmp_path, judge, sft, dpo), "stage:judge", "stage:dpo", held_out)
    assert facts["shared_judge_policy"] == 1 and facts["judge_prompts"] == 3 and facts["policy_prompts"] == 3
    assert facts["held_out_in_judge_data"] == 1 and facts["held_out_in_policy_data"] == 0
    assert "both trained on: 1" in facts["statement"]


def test_disjoint_data_is_stated_as_such_and_an_outside_judge_as_unknown(tmp_path):
    judge = write_pairs(tmp_path / "judge.jsonl", ["A"])
    policy = write_pairs(tmp_path / "policy.jsonl", ["B"])
    pipeline = pipeline_with(tmp_path, judge, policy, policy)
    assert judge_provenance(pipeline, "stage:judge", "stage:dpo", [])["shared_judge_policy"] == 0
    assert "not known" in judge_provenance(pipeline, "/somewhere/rm", "stage:dpo", [])["statement"]
    assert judge_provenance(pipeline, None, "stage:dpo", []) is None


def test_the_bundled_judge_split_shares_no_prompt_with_the_train_split():
    from alignkit.eval.stage import _prompt_key

    keys = {split: {_prompt_key(p) for p in load_prompts(f"hhh:{split}")[0]} for split in ("train", "judge", "test", "ood")}
    assert not keys["train"] & keys["judge"] and not keys["test"] & (keys["train"] | keys["judge"])
    # The out-of-distribution refusal set is held out from every other split too.
    assert not keys["ood"] & (keys["train"] | keys["judge"] | keys["test"])
    tags = load_prompts("hhh:ood")[1]
    assert (tags.count("harmful"), tags.count("benign"), len(tags)) == (100, 100, 200)


def test_an_eval_limit_is_a_seeded_sample_across_the_splits_kinds():
    # hhh:test lists its files one kind after another: its first 24 prompts have no 'honest' one
    # and none of the refusal file's at the end.
    all_prompts, all_tags = load_prompts("hhh:test")
    prompts, tags = load_prompts("hhh:test", 24)
    assert len(prompts) == 24 and set(tags) == set(all_tags)
    assert load_prompts("hhh:test", 24) == (prompts, tags)  # the same sample every run
    positions = [all_prompts.index(p) for p in prompts]
    assert positions == sorted(positions)  # file order kept
    assert positions[-1] > len(all_prompts) / 2  # drawn from the whole split
    assert [all_tags[i] for i in positions] == tags
    assert load_prompts("hhh:test", 24, seed=1)[0] != prompts
