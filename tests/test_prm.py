"""Process reward model (alignkit prm), the bundled arith-steps set, and best-of-N selection."""

import json
import math

import pytest
import torch



@pytest.fixture(autouse=True)
def one_thread():
    # On a 2-core machine shared with other jobs, two intra-op threads spin against each other:
    # a tiny model's forward measured 8 s with 2 threads and 0.13 s with 1.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ROW = {"prompt": [{"role": "user", "content": "What is 12 + 7 + 15?"}],
       "completions": ["12 + 7 = 19", "Step 2: 19 + 15 = 35", "Answer: 35"], "labels": [True, False, False]}


def test_step_labels_align_with_step_boundaries_in_the_tokens(tokenizer):
    from alignkit.data.steps import collate_steps, encode_stepwise, stepwise_record
    from alignkit.rollout import encode_prompt

    other = {**ROW, "completions": ["Then 3 + 4 = 7.", "Answer: 7"], "labels": [True, True]}
    items = encode_stepwise(tokenizer, [stepwise_record(ROW), stepwise_record(other)])
    batch = collate_steps(items, tokenizer.pad_token_id)
    for row, (raw, item) in enumerate(zip([ROW, other], items)):
        prompt_ids = encode_prompt(tokenizer, raw["prompt"])
        assert item.input_ids[: len(prompt_ids)] == prompt_ids
        start = len(prompt_ids)
        for s, step in enumerate(raw["completions"]):
            end = item.step_ends[s]
            # the tokens from the previous step's end to this one spell exactly this step and its newline
            assert tokenizer.decode(item.input_ids[start : end + 1]) == step + "\n"
            assert tokenizer.decode(item.input_ids[end : end + 1]).endswith("\n")
            assert int(batch["step_positions"][row, s]) == end
            assert batch["input_ids"][row, end] == item.input_ids[end]
            assert bool(batch["step_labels"][row, s]) == raw["labels"][s]
            start = end + 1
        assert end == len(item.input_ids) - 1  # the last step ends the sequence
    assert batch["step_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    final = collate_steps(items, tokenizer.pad_token_id, final_only=True)  # the ORM: one label, at the end
    assert final["step_positions"][:, 0].tolist() == [it.step_ends[-1] for it in items]
    assert final["step_labels"][:, 0].tolist() == [0.0, 1.0]


def test_prm_loss_against_its_formula():
    from alignkit.losses import process_reward_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 9.0, 4.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    losses, metrics = process_reward_loss(step_logits=logits, step_labels=labels, step_mask=mask)

    def bce(z, y):
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = [[bce(2.0, 1), bce(-1.0, 0), bce(0.5, 1)], [bce(0.3, 0), 0.0, 0.0]]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)
    # σ(2) > .5 right, σ(-1) < .5 right, σ(.5) > .5 right, σ(.3) > .5 wrong: 3 of 4
    assert metrics["step_accuracy"].item() == pytest.approx(0.75)
    sig = torch.sigmoid(logits)
    assert metrics["score/correct"].item() == pytest.approx(float(sig[0, 0] + sig[0, 2]) / 2, abs=1e-6)
    assert metrics["score/incorrect"].item() == pytest.approx(float(sig[0, 1] + sig[1, 0]) / 2, abs=1e-6)


def _write_rows(path, n=16):
    from alignkit.datasets.arith_steps import generate

    rows = generate(sizes={"train": n // 2, "test": 2})["train"][:n]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_prm_steps_move_parameters_and_lower_the_loss(tiny_dir, tmp_path):
    from alignkit.train.prm import PRMConfig, build_prm

    _write_rows(tmp_path / "steps.jsonl", n=8)
    method = build_prm(PRMConfig(model=tiny_dir, data=str(tmp_path / "steps.jsonl"), output_dir=str(tmp_path / "run")))
    batch = method.collate(method.train_items)
    start = {name: p.detach().clone() for name, p in method.model.named_parameters()}
    optimizer = torch.optim.AdamW(method.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss, _ = method.loss(batch, {"steps": float(batch["step_mask"].sum())})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    moved = [name for name, p in method.model.named_parameters() if not torch.equal(p, start[name])]
    assert "score.weight" in moved and any("layers" in name for name in moved)


def test_prm_run_lowers_held_out_loss_and_reloads_as_a_scorer(tiny_dir, tmp_path):
    from alignkit.models.heads import load_scalar_model
    from alignkit.rewards.process import ProcessRewardModel
    from alignkit.train.prm import PRMConfig, run_prm

    _write_rows(tmp_path / "steps.jsonl", n=8)
    before, _ = load_scalar_model(tiny_dir)
    summary = run_prm(PRMConfig(model=tiny_dir, data=str(tmp_path / "steps.jsonl"), eval_data=str(tmp_path / "steps.jsonl"),
                                output_dir=str(tmp_path / "run"), max_steps=6, batch_size=4, lr=3e-3, warmup_ratio=0,
                                eval_on_start=True, seed=0))
    start, end = summary["eval_on_start"]["eval/loss"], summary["eval"]["eval/loss"]
    assert end < start - 0.05, (start, end)
    after = ProcessRewardModel.from_pretrained(tmp_path / "run")
    assert after.aggregate == "min"
    moved = [name for name, p in after.model.named_parameters() if not torch.equal(p, dict(before.named_parameters())[name])]
    assert "score.weight" in moved and any("layers" in name for name in moved)


def test_prm_aggregates_by_min_over_steps_read_at_each_step_end(tiny_dir):
    from alignkit.data.steps import encode_steps
    from alignkit.models.heads import load_scalar_model
    from alignkit.models.step_scores import position_scores
    from alignkit.rewards.process import ProcessRewardModel

    torch.manual_seed(1)
    model, tokenizer = load_scalar_model(tiny_dir)
    torch.nn.init.normal_(model.score.weight, std=0.1)  # spread the scores so min, last and mean differ
    prm = ProcessRewardModel(model, tokenizer, aggregate="min", batch_size=2)
    prompts = [ROW["prompt"]] * 3
    completions = ["12 + 7 = 19\n19 + 15 = 34\nAnswer: 34", "  12 + 7 = 20\n\nAnswer: 35  ", "one line only"]
    per_step = prm.step_scores(prompts, completions)
    assert [len(p) for p in per_step] == [3, 2, 1]  # blank lines are not steps
    for prompt, text, probs in zip(prompts, completions, per_step):
        ids, ends = encode_steps(tokenizer, prompt, [line.strip() for line in text.split("\n") if line.strip()])
        with torch.no_grad():  # one row alone, no padding: the reference reading
            logits = position_scores(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([ends]))
        assert torch.allclose(torch.tensor(probs), torch.sigmoid(logits[0]), atol=1e-5)
    assert len({round(p, 6) for p in per_step[0]}) == 3
    assert prm(prompts=prompts, completions=completions) == pytest.approx([min(p) for p in per_step])
    prm.aggregate = "last"
    assert prm(prompts=prompts, completions=completions) == pytest.approx([p[-1] for p in per_step])


def test_arith_steps_files_are_what_the_generator_writes_and_labels_check_the_arithmetic():
    from alignkit.datasets import bundled_files
    from alignkit.datasets.arith_steps import generate, label_steps

    generated = generate()
    for split, rows in generated.items():
        (path,) = bundled_files(f"arith-steps:{split}")
        assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    train, test = generated["train"], generated["test"]
    assert not {r["prompt"][0]["content"] for r in train} & {r["prompt"][0]["content"] for r in test}
    assert [r["prompt"] for r in generated["problems"]] == [r["prompt"] for r in test[::2]]
    for row in train:  # a clean solution is all right; an injected error makes its step and all after wrong
        labels = row["labels"]
        assert all(labels) == (row["error"] is None)
        assert labels == sorted(labels, reverse=True)
        if row["error"] == "answer":
            assert labels == [True, True, False]
    share = sum(all(r["labels"]) for r in train) / len(train)
    assert 0.4 < share < 0.6
    assert label_steps(["12 + 7 = 19", "19 + 15 = 34", "Answer: 34"], 34) == [True, True, True]
    assert label_steps(["12 + 7 = 20", "20 + 15 = 35", "Answer: 35"], 34) == [False, False, False]
    assert label_steps(["12 + 7 = 19", "19 + 15 = 34", "Answer: 43"], 34) == [True, True, False]
    assert label_steps(["Add them.", "12 + 7 = 19", "19 - 15 = 5", "Answer: 4"], 4) == [True, True, False, False]


def test_stepwise_reader_names_file_line_and_field(tmp_path):
    from alignkit.data import DataError
    from alignkit.data.steps import read_stepwise

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "labels": [True]}) + "\n")
    with pytest.raises(DataError) as error:
        read_stepwise(path)
    assert "bad.jsonl:2:" in str(error.value) and "field 'labels'" in str(error.value)


def test_prm_is_a_cli_command_with_its_fields_as_flags():
    from click.testing import CliRunner

    from alignkit.cli import app

    result = CliRunner().invoke(app, ["prm", "--help"])
    assert result.exit_code == 0, result.output
    assert "--label-mode" in result.output and "--trainable-layers" in result.output


def test_best_of_n_picks_the_argmax_and_majority_the_most_common_answer():
    from alignkit.bon import best_index, extract_answer, majority_index

    assert best_index([0.1, 0.9, None, 0.3]) == 1
    assert best_index([None, 0.2, 0.2]) == 1  # ties: the earliest
    assert best_index([-3.0, None, -1.0]) == 2  # negative scores (a Bradley-Terry RM) are fine
    assert best_index([None, None]) is None
    assert extract_answer("12 + 7 = 19\nAnswer: 1,034") == "1034"
    assert extract_answer("so we get 41 then 43.") == "43"
    assert extract_answer("no digits") is None
    assert majority_index(["5", None, "7", "7", "5", "7"]) == 2
    assert majority_index(["5", "7"]) == 0
    assert majority_index([None, None]) is None


def test_best_of_n_keeps_each_prompts_best_sample_and_the_sft_file_reloads(tiny, tmp_path):
    from alignkit.bon.run import best_of_n, sft_rows, write_jsonl
    from alignkit.data import encode_dataset, read_records
    from alignkit.rollout import make_engine
    from alignkit.train.online import load_prompts

    model, tokenizer = tiny
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1)}) + "\n"
                                    for i in range(3)))
    rows = load_prompts(str(prompts_file), tokenizer, max_prompt_length=64)

    def longest(prompts, completions, completion_ids=None, answer=None, **columns):
        assert len(answer) == len(completions)  # the prompt's columns reach the scorer, one per sample
        return [float(len(c[0]["content"])) for c in completions]

    engine = make_engine(model, tokenizer, backend="hf")
    choices = best_of_n(engine, longest, rows, n=4, max_new_tokens=6, seed=0, chunk=2)
    assert len(choices) == 3 and all(len(c.texts) == 4 for c in choices)
    for c in choices:
        assert c.chosen == max(range(4), key=lambda i: (len(c.texts[i]), -i))
    written = write_jsonl(sft_rows(choices), tmp_path / "best.jsonl")
    records = read_records(written, "sft").records
    assert [r.completion[0]["content"] for r in records] == [c.texts[c.chosen] for c in choices]
    assert [r.meta["answer"] for r in records] == ["1", "2", "3"] and records[0].meta["n"] == 4
    assert len(encode_dataset(tokenizer, records, max_length=256).items) == 3
    assert sft_rows(choices, min_score=1e9) == []  # rejection: nothing reaches the bar


def test_best_of_n_accuracy_uses_disjoint_groups_and_each_rules_pick():
    from alignkit.bon.compare import accuracy_at, by_score, by_vote, table

    # 8 samples: only sample 5 is correct; the PRM likes it, the ORM likes sample 2, votes favour "9".
    columns = {"correct": [0, 0, 0, 0, 0, 1, 0, 0], "prm": [0.1, 0.2, 0.3, 0.2, 0.1, 0.9, 0.5, 0.4],
               "orm": [0.1, 0.2, 0.95, 0.2, 0.1, 0.9, 0.5, 0.4], "answer": ["9", "9", "8", "7", "9", "4", "9", None]}
    assert accuracy_at(columns, by_score("prm"), 8) == 1.0
    assert accuracy_at(columns, by_score("orm"), 8) == 0.0
    assert accuracy_at(columns, by_score("prm"), 4) == 0.5  # groups 0-3 (no correct sample) and 4-7
    assert accuracy_at(columns, by_score("correct"), 1) == 1 / 8  # N = 1 is plain pass@1
    assert accuracy_at(columns, by_vote, 8) == 0.0
    result = table([columns, {**columns, "correct": [1] * 8}], {"prm": by_score("prm")}, [1, 8])
    assert result["prm"][8]["accuracy"] == 1.0 and result["prm"][1]["accuracy"] == (1 / 8 + 1) / 2
    assert result["prm"][1]["ci_low"] < result["prm"][1]["accuracy"] < result["prm"][1]["ci_high"]
