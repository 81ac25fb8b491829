"""Per-token and per-sequence log-probs, computed only where a loss needs them.

A causal LM's full output is a ``[tokens, vocab]`` logits tensor (49,152 columns for SmolLM2),
most of which a preference loss never reads: it needs ``log p(token_{t+1} | tokens_{≤t})`` at
response positions only. So we run the decoder for hidden states, pick the positions whose
*next* token is a response token, and apply the LM head and log-softmax there, in chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.models.sharding import one_forward


def _unwrap(model):
    """The plain transformers model under DDP / PEFT wrappers (PEFT's LoRA layers stay active)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    return model


def decoder_and_head(model):
    """The transformer trunk (returns hidden states) and the output projection of a causal LM."""
    base = _unwrap(model)
    return base.get_decoder(), base.get_output_embeddings()


# oneDNN, which runs bf16 matmuls on a CPU, compiles and keeps a kernel for every matmul shape it
# meets (about 1 MB each, up to 1,024). A new sequence length and a new response-token count in
# every batch filled that cache with one-off kernels: the quickstart's SFT stage (bf16 autocast)
# grew from 2.7 to 3.3 GB over 40 steps, and the cache stayed for the stages after it. Padding the
# width (here and for reward models, ``heads.sequence_scores``) and the number of scored rows up to
# a multiple of 16 bounds the shapes: 2.78 GB after 40 steps, level, at the same step time.
CPU_BF16_MULTIPLE = 16


def _cpu_bf16(tensor: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether matmuls of ``tensor`` with ``weight`` run in bf16/fp16 on a CPU (oneDNN)."""
    return tensor.device.type == "cpu" and (torch.is_autocast_enabled("cpu") or weight.dtype != torch.float32)


def trunk_hidden(trunk, input_ids, attention_mask, *, head_weight: torch.Tensor, position_ids=None) -> torch.Tensor:
    """``trunk(...).last_hidden_state`` (B, T, H); on a CPU in bf16 the batch runs padded on the right
    to a width that is a multiple of ``CPU_BF16_MULTIPLE`` (masked out: causal attention keeps the
    padding from every real position) and the padding's rows are dropped."""
    width = input_ids.shape[1]
    if _cpu_bf16(input_ids, head_weight) and attention_mask.dim() == 2 and position_ids is None:
        extra = -width % CPU_BF16_MULTIPLE
        return trunk(input_ids=F.pad(input_ids, (0, extra)),
                     attention_mask=F.pad(attention_mask, (0, extra))).last_hidden_state[:, :width]
    return trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state


def gather_token_logps(hidden: torch.Tensor, targets: torch.Tensor, lm_head, *, chunk_size: int = 1024) -> torch.Tensor:
    """log p(target | hidden) for N positions without building all N×V logits at once.

    hidden: (N, H) hidden states at the positions that predict ``targets`` (N,).
    Returns (N,) log-probs. Chunking bounds the transient memory at ``chunk_size × V`` floats.
    A plain bias-free linear head (every causal LM we load) goes through ``HeadLogps``; anything
    else (a LoRA-wrapped or biased head) through autograd's log_softmax and gather.
    """
    fused = type(lm_head) is torch.nn.Linear and lm_head.bias is None
    rows = hidden.shape[0]
    if fused and _cpu_bf16(hidden, lm_head.weight):  # zero rows scoring token 0, dropped below
        extra = -rows % CPU_BF16_MULTIPLE
        hidden, targets = F.pad(hidden, (0, 0, 0, extra)), F.pad(targets, (0, extra))
    out = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if fused:
            out.append(HeadLogps.apply(h, lm_head.weight, t))
        else:
            logps = torch.log_softmax(lm_head(h).float(), dim=-1)
            out.append(logps.gather(-1, t[:, None]).squeeze(-1))
    if not out:
        return hidden.new_zeros(0)
    return torch.cat(out)[:rows]


class HeadLogps(torch.autograd.Function):
    """log p(y | h) = (h Wᵀ)_y − logsumexp(h Wᵀ), with the gradient written by hand:

        ∂ log p(y) / ∂ logits = onehot(y) − softmax(logits)

    Autograd would build that from a zero-filled [N × V] tensor (gather's backward) and a
    separate log_softmax backward that allocates another; here the saved log-softmax becomes the
    gradient in place, in two passes. Backward runs once: a retained graph raises autograd's
    in-place error rather than returning a wrong gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets):
        logps = torch.log_softmax(torch.nn.functional.linear(hidden, weight).float(), dim=-1)  # (N, V)
        ctx.save_for_backward(hidden, weight, targets, logps)
        return logps.gather(-1, targets[:, None]).squeeze(-1)

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, targets, logps = ctx.saved_tensors
        grad_logits = logps.exp_().mul_(-grad[:, None])  # −g · softmax
        grad_logits[torch.arange(len(targets), device=targets.device), targets] += grad  # + g · onehot(y)
        grad_logits = grad_logits.to(weight.dtype)
        grad_hidden = grad_logits @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad_logits.t() @ hidden if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_weight, None


@one_forward
def response_token_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    position_ids: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Per-token log-probs of the response tokens, zero elsewhere.

    input_ids, attention_mask, response_mask: (B, T); response_mask[b, t] = 1 when token t is a
    response token. attention_mask may also be a prepared 4D mask (B, 1, T, T).
    Returns token_logps (B, T) where token_logps[b, t] = log p(input_ids[b, t] | input_ids[b, <t])
    for response tokens and 0 for the rest. Token 0 can never be scored (nothing predicts it).
    """
    decoder, lm_head = decoder_and_head(model)
    hidden = trunk_hidden(decoder, input_ids, attention_mask, head_weight=lm_head.weight, position_ids=position_ids)
    # Position t-1 predicts token t: shift the mask left by one to select predicting positions.
    predict = torch.zeros_like(response_mask, dtype=torch.bool)
    predict[:, :-1] = response_mask[:, 1:].bool()
    targets = input_ids[:, 1:][predict[:, :-1]]
    logps = gather_token_logps(hidden[predict], targets, lm_head, chunk_size=chunk_size)
    token_logps = torch.zeros(input_ids.shape, dtype=logps.dtype, device=input_ids.device)
    shifted = torch.zeros_like(predict)
    shifted[:, 1:] = predict[:, :-1]
    token_logps[shifted] = logps
    return token_logps


def sequence_logps(model, input_ids, attention_mask, response_mask, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (B,) and response lengths (B,) — what the DPO family consumes."""
    token_logps = response_token_logps(model, input_ids, attention_mask, response_mask, **kwargs)
    return token_logps.sum(-1), response_mask.sum(-1).to(token_logps.dtype)


def idle_forward(model) -> torch.Tensor:
    """A zero scalar from a forward over a dummy two-token row, for a process with no rows when
    every process must run a forward: under FSDP each is a collective, and in backward every
    weight gets a (zero) gradient, so each process joins every gradient reduction."""
    ids = torch.zeros((1, 2), dtype=torch.long, device=next(model.parameters()).device)
    return response_token_logps(model, ids, torch.ones_like(ids), torch.tensor([[0, 1]], device=ids.device)).sum() * 0.0


@one_forward
def full_logits_token_logps(model, input_ids, attention_mask, response_mask) -> torch.Tensor:
    """The plain computation (full logits, log-softmax over everything): the reference that the
    selective path above must equal. Used by tests, and readable as the definition."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()  # (B, T, V)
    logps = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    token_logps = torch.zeros(input_ids.shape, dtype=logps.dtype, device=input_ids.device)
    token_logps[:, 1:] = logps * response_mask[:, 1:]
    return token_logps
