"""First-step parity with TRL's DPOTrainer on the bundled model: same data, same config.

Slow (loads TRL's trainer stack and the 135M model); run with `bash scripts/test.sh --slow`.
The reference is a different model than the policy, so the loss is not the trivial ln 2.
"""

import pytest
import torch

pytestmark = pytest.mark.slow

PAIRS = "alignkit/datasets/hhh/helpful.test.jsonl"
N = 4


def _trl_first_step(policy, reference, tokenizer, tmp_path, beta):
    from datasets import load_dataset
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    data = load_dataset("json", data_files=PAIRS, split=f"train[:{N}]").select_columns(["prompt", "chosen", "rejected"])
    args = TRLConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=N, max_steps=1, learning_rate=1e-6,
                     logging_steps=1, beta=beta, max_length=1024, report_to=[], use_cpu=True, save_strategy="no",
                     seed=0, disable_dropout=True,
                     # TRL 1.16 defaults to bf16 autocast and gradient checkpointing; the comparison is in fp32.
                     bf16=False, gradient_checkpointing=False)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    return next(row for row in trainer.state.log_history if "loss" in row)


def test_first_step_matches_trl_dpo_trainer(tmp_path):
    from alignkit.models import load_policy, load_tokenizer
    from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
    from alignkit.train.setup import load_pairs

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    policy = load_policy("smollm2-135m-instruct")
    reference = load_policy("smollm2-135m-instruct")
    with torch.no_grad():  # a reference that differs from the policy, identical for both libraries
        for p in reference.parameters():
            p.mul_(1.01)

    cfg = DPOConfig(model="smollm2-135m-instruct", output_dir=str(tmp_path / "ours"), batch_size=N, beta=0.1,
                    max_length=1024, reference="copy")
    items = [PairItem(p) for p in load_pairs(PAIRS, tokenizer, cfg)[:N]]
    method = DPOMethod(cfg, policy, tokenizer, items)
    method.reference.frozen = reference.eval()
    loss, metrics = method.loss(method.collate(items))

    trl = _trl_first_step(load_policy("smollm2-135m-instruct"), reference, tokenizer, tmp_path, beta=0.1)
    assert loss.item() == pytest.approx(trl["loss"], abs=1e-3)
    assert metrics["logps/chosen"] == pytest.approx(trl["logps/chosen"], rel=1e-3)
    assert metrics["logps/rejected"] == pytest.approx(trl["logps/rejected"], rel=1e-3)
    assert metrics["rewards/margins"] == pytest.approx(trl["rewards/margins"], abs=1e-3)
