"""Records -> token ids, with the prompt/response boundary the losses need.

Conversational records go through the tokenizer's chat template (prompt rendered with the
generation prompt, as the model will see it at inference). Standard string records are plain
concatenation ``prompt + completion + EOS``, as TRL does, with no template.

A response's ids are taken from the tokenisation of the *whole* text, after the prompt's ids,
so they are exactly the tokens the model is trained to produce in context (including the
end-of-turn tokens the template writes, e.g. ``<|im_end|>\\n``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.data.errors import DataError
from alignkit.data.formats import Prompt, Response


@dataclass
class EncodedSFT:
    prompt_ids: list[int]
    completion_ids: list[int]
    meta: dict = field(default_factory=dict)


@dataclass
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    meta: dict = field(default_factory=dict)


@dataclass
class EncodedBinary:
    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    meta: dict = field(default_factory=dict)


@dataclass
class EncodedPrompt:
    prompt_ids: list[int]
    meta: dict = field(default_factory=dict)
    answer: str | None = None  # the reference answer a verifiable reward checks against
    prompt: Prompt | None = None  # the prompt as given, for reward functions and judges that read text


def apply_template(tokenizer, messages: list, *, field: str | None = None, **kwargs) -> str:
    """The chat template's text for ``messages``; a DataError when the template refuses them.

    Templates refuse what their model was not trained on (Gemma: a "system" turn; many: a
    "tool" turn, or turns that do not alternate) by raising a Jinja error: that names the field
    instead of ending in a traceback.
    """
    import jinja2

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except jinja2.TemplateError as exc:
        roles = ", ".join(dict.fromkeys(m["role"] for m in messages))
        raise DataError(f"the chat template refuses these messages (roles: {roles}): {exc}", field=field) from None


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The text that precedes the model's reply: templated with the generation prompt, or as is."""
    if isinstance(prompt, list):
        return apply_template(tokenizer, prompt, field="prompt", add_generation_prompt=True)
    return prompt


def render_conversation(tokenizer, prompt: Prompt, completion: Response) -> str:
    """The full training text: templated conversation, or ``prompt + completion + EOS``."""
    if isinstance(prompt, list):
        return apply_template(tokenizer, prompt + completion)  # the caller names the response
    text = prompt + completion
    eos = tokenizer.eos_token
    # TRL appends EOS to standard completions so the model learns to stop.
    return text if not eos or text.endswith(eos) else text + eos


def _tokenize(tokenizer, text: str, *, templated: bool) -> list[int]:
    # Template output already holds its special tokens; plain text gets the tokenizer's own
    # (e.g. a BOS for Llama-style tokenizers), exactly as TRL tokenises standard prompts.
    return tokenizer(text, add_special_tokens=not templated)["input_ids"]


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of the prompt as the model sees it before replying."""
    return _tokenize(tokenizer, render_prompt(tokenizer, prompt), templated=isinstance(prompt, list))


def completion_after_prompt(tokenizer, prompt: Prompt, prompt_ids: list[int], completion: Response) -> list[int]:
    """The completion's ids given already-encoded ``prompt_ids`` (shared by a pair's two responses)."""
    templated = isinstance(prompt, list)
    prompt_text = render_prompt(tokenizer, prompt)
    full_text = render_conversation(tokenizer, prompt, completion)
    full_ids = _tokenize(tokenizer, full_text, templated=templated)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return full_ids[len(prompt_ids) :]
    if full_text.startswith(prompt_text):
        # Tokens merged across the boundary (e.g. prompt "Answer:" + completion " 42" in plain
        # text, or a template ending without a newline). Encoding the completion text on its
        # own keeps prompt_ids intact, which is what the model is conditioned on at inference;
        # prompt_ids + completion_ids still decode to the full text, just not in the merged
        # tokenisation. (TRL instead cuts the prompt back to the common prefix.)
        return tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    raise DataError(
        "the chat template renders this prompt differently alone (with the generation prompt) than "
        "inside the full conversation, so the response cannot be located",
        field="prompt",
    )


def encode_completion(tokenizer, prompt: Prompt, completion: Response) -> list[int]:
    """The completion's ids exactly as they follow the prompt in the full text, end-of-turn included."""
    return completion_after_prompt(tokenizer, prompt, encode_prompt(tokenizer, prompt), completion)


def response_mask(prompt_ids: list[int], completion_ids: list[int]) -> tuple[list[int], list[int]]:
    """``(input_ids, mask)`` for one sequence; mask is 1 on response tokens, 0 on prompt tokens."""
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + [1] * len(completion_ids)
