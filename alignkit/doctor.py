"""`alignkit doctor`: versions, devices, and a real generation from the bundled model."""

from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ["alignkit", "torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "gguf", "trl"]


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def chat(model, tokenizer, prompt: str, *, max_new_tokens: int = 96) -> str:
    """Greedy reply to one user message through the model's chat template."""
    import torch

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def run_doctor(model_name: str, prompt: str, console) -> str:
    import torch

    from alignkit.models import load_policy, load_tokenizer

    console.print(f"python {platform.python_version()} on {platform.machine()}, torch threads {torch.get_num_threads()}")
    for name, ver in package_versions().items():
        console.print(f"  {name:<13} {ver}")
    console.print(f"cuda: {torch.cuda.is_available()}" + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    t = time.time()
    tokenizer = load_tokenizer(model_name)
    model = load_policy(model_name)
    console.print(f"loaded {model_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
                  f"{next(model.parameters()).dtype}) in {time.time() - t:.1f}s")
    t = time.time()
    reply = chat(model, tokenizer, prompt)
    console.print(f"[bold]user:[/bold] {prompt}\n[bold]assistant:[/bold] {reply}")
    console.print(f"generated in {time.time() - t:.1f}s")
    return reply
