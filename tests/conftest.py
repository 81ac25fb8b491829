import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer():
    from alignkit.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture()
def tiny():
    """A fresh (model, tokenizer) pair: random 2-layer Llama with the real SmolLM2 tokenizer."""
    from alignkit.models import tiny_model

    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny model saved as a normal HF directory, shared by CLI-level tests."""
    from alignkit.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
