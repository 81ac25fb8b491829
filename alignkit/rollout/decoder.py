"""A lean Llama-family decoder for sampling: the model's own weights, fewer ops, a static KV cache.

Why not ``model.generate``: at decode shapes (a handful of tokens per step) a CPU spends most of
the step in per-op overhead, not in matmuls. Hugging Face's forward runs ~40 small ops per layer
(separate q/k/v and gate/up projections, mask building, cache bookkeeping). This one runs:

    x ─ rms_norm ─ [q|k|v] = x·W_qkvᵀ ─ rope(q, k) ─ write k, v into the cache at each row's position
      ─ attention over the cache (GQA, masked past each row's length) ─ ·W_oᵀ ─ + x
      ─ rms_norm ─ [g|u] = x·W_guᵀ ─ silu(g)·u ─ ·W_downᵀ ─ + x

with the projections fused (one matmul for q, k, v; one for gate and up). The math is exactly
the Llama decoder layer, so in fp32 the log-probs equal a teacher-forced forward of the HF model
to float round-off (tested).

The KV cache is preallocated, one slot per batch row: ``keys[layer]`` is (S, n_kv, L_max, hd).
Every slot keeps its own length, so a finished row's slot can be refilled with a new prompt while
the others keep decoding (continuous batching, driven by ``cpu_engine``).

Supported: ``LlamaForCausalLM`` and the architectures with the same layer (Mistral without a
sliding window, Qwen2 with q/k/v biases, SmolLM2). ``supports(model)`` says whether a model fits;
anything else goes through the ``generate``-based engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignkit.rollout.precision import prefers_packed
from alignkit.rollout.projection import Projection
from alignkit.rollout.weights import effective_bias, effective_weight

SUPPORTED = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}


def supports(model) -> bool:
    """True when ``model`` (merged, not PEFT-wrapped) has the Llama decoder layer this file implements."""
    config = getattr(model, "config", None)
    if type(model).__name__ not in SUPPORTED or config is None:
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False  # a sliding window changes the mask; not implemented here
    return getattr(config, "hidden_act", "silu") == "silu" and not getattr(config, "mlp_bias", False)


@dataclass
class Layer:
    input_norm: torch.Tensor  # (H,)
    qkv: Projection  # H → (nh + 2·nkv)·hd
    o: Projection  # nh·hd → H
    post_norm: torch.Tensor  # (H,)
    gate_up: Projection  # H → 2·I
    down: Projection  # I → H


class Decoder:
    """Weights (copied, fused, in ``dtype``) and the KV cache of ``slots`` sequences of ≤ ``max_len`` tokens."""

    def __init__(self, model, *, dtype: torch.dtype = torch.float32, packed: bool | None = None):
        config = model.config
        self.dtype = dtype
        self.device = next(model.parameters()).device
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.eps = config.rms_norm_eps
        self.rotary = model.model.rotary_emb  # HF's own: every rope scaling it knows
        if packed is None:  # oneDNN-prepacked weights where they measure faster (CPU only)
            packed = self.device.type == "cpu" and prefers_packed(dtype, config.hidden_size)
        self.packed = packed
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.load_weights(model)

    @torch.no_grad()
    def load_weights(self, model) -> None:
        """Copy (and fuse) the current weights of ``model``: an HF causal LM whose linear layers may
        carry LoRA adapters (their deltas are added in, see ``effective_weight``)."""
        cast = lambda t: t.detach().to(device=self.device, dtype=self.dtype, copy=True).contiguous()  # noqa: E731
        w = effective_weight
        project = lambda weight, bias=None: Projection(cast(weight), bias, packed=self.packed)  # noqa: E731
        # 1/√hd folded into the query rows: scores need no extra multiply per layer and step.
        scale = torch.ones(self.n_heads * self.head_dim + 2 * self.n_kv * self.head_dim)
        scale[: self.n_heads * self.head_dim] = self.head_dim**-0.5
        scale = scale.to(self.device)
        self.layers = []
        for block in model.model.layers:
            attn, mlp = block.self_attn, block.mlp
            bias = None
            if effective_bias(attn.q_proj) is not None:
                bias = cast(torch.cat([effective_bias(attn.q_proj), effective_bias(attn.k_proj), effective_bias(attn.v_proj)]) * scale)
            self.layers.append(
                Layer(
                    input_norm=cast(block.input_layernorm.weight),
                    qkv=project(torch.cat([w(attn.q_proj), w(attn.k_proj), w(attn.v_proj)]) * scale[:, None], bias),
                    o=project(w(attn.o_proj)),
                    post_norm=cast(block.post_attention_layernorm.weight),
                    gate_up=project(torch.cat([w(mlp.gate_proj), w(mlp.up_proj)])),
                    down=project(w(mlp.down_proj)),
                )
            )
        embed = model.model.embed_tokens
        self.embed = cast(w(embed) if hasattr(embed, "base_layer") else embed.weight)  # (V, H)
        self.norm = cast(model.model.norm.weight)
        tied = getattr(model.lm_head, "weight", None) is embed.weight and not hasattr(model.lm_head, "base_layer")
        self.lm_head = project(self.embed if tied else cast(w(model.lm_head)))

    def projections(self) -> list[Projection]:
        return [p for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)] + [self.lm_head]

    def allocate(self, slots: int, max_len: int) -> None:
        """A zeroed cache for ``slots`` sequences of up to ``max_len`` tokens (reused when big enough);
        packed weights re-packed for blocks of ``slots`` rows, the decode batch."""
        for projection in self.projections():
            projection.repack(slots)
        shape = (slots, self.n_kv, max_len, self.head_dim)
        if self.keys and self.keys[0].shape[0] == slots and self.keys[0].shape[2] >= max_len:
            return
        self.keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        positions = torch.arange(max_len, device=self.device)[None]
        cos, sin = self.rotary(self.embed[:1].float(), positions)  # (1, L_max, hd)
        half = self.head_dim // 2
        sign = torch.cat([-torch.ones(half), torch.ones(self.head_dim - half)]).to(self.device)
        self.cos, self.signed_sin = cos[0].to(self.dtype), (sin[0] * sign).to(self.dtype)

    def _qkv(self, layer: Layer, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
        """[q | k | v] of hidden states x (…, H) as (…, nh + 2·nkv, hd), rotary embedding applied to q and k.

        Rope in place, q and k together: with rot(x) = cat(−x₂, x₁) = roll(x, hd/2)·[−1…, +1…],
            x·cos + rot(x)·sin  =  x·cos + roll(x)·signed_sin       (three ops, no temporaries for halves)
        """
        qkv = layer.qkv(F.rms_norm(x, x.shape[-1:], layer.input_norm, self.eps))
        qkv = qkv.unflatten(-1, (self.n_heads + 2 * self.n_kv, self.head_dim))
        qk = qkv[..., : self.n_heads + self.n_kv, :]
        rolled = qk.roll(self.head_dim // 2, dims=-1)
        qk.mul_(cos).addcmul_(rolled, signed_sin)
        return qkv

    def _gated(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        """silu(gate)·up of hidden states x (…, H): the MLP before its down projection."""
        gate, up = layer.gate_up(F.rms_norm(x, x.shape[-1:], layer.post_norm, self.eps)).chunk(2, dim=-1)
        return F.silu(gate).mul_(up)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 next-token logits (…, V) of final hidden states (…, H)."""
        return self.lm_head(F.rms_norm(hidden, hidden.shape[-1:], self.norm, self.eps)).float()

    @torch.no_grad()
    def prefill(self, token_ids: list[list[int]], slots: list[int]) -> torch.Tensor:
        """Run whole prompts, writing their keys/values into cache ``slots`` from position 0.

        The batch is right-padded, so plain causal attention is right for every real token (pads
        sit after them and are never attended to by them). Returns the hidden state at each
        prompt's last token, (B, H): the input to the first sampled token's logits.
        """
        lengths = torch.tensor([len(t) for t in token_ids], device=self.device)
        width = int(lengths.max())
        ids = torch.zeros(len(token_ids), width, dtype=torch.long, device=self.device)
        for row, tokens in enumerate(token_ids):
            ids[row, : len(tokens)] = torch.tensor(tokens)
        slot_index = torch.tensor(slots, device=self.device)
        cos, signed_sin = self.cos[:width, None], self.signed_sin[:width, None]  # (T, 1, hd) against (B, T, heads, hd)
        nh, nkv = self.n_heads, self.n_kv
        x = F.embedding(ids, self.embed)  # (B, T, H)
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            qkv = self._qkv(layer, x, cos, signed_sin).transpose(1, 2)  # (B, heads, T, hd)
            q, k, v = qkv[:, :nh], qkv[:, nh : nh + nkv], qkv[:, nh + nkv :]
            keys[slot_index, :, :width] = k
            values[slot_index, :, :width] = v
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, scale=1.0)  # q is pre-scaled
            x = layer.o.add_to(x, attn.transpose(1, 2).flatten(2))
            x = layer.down.add_to(x, self._gated(layer, x))
        return x[torch.arange(len(token_ids), device=self.device), lengths - 1]

    @torch.no_grad()
    def copy_slot(self, source: int, targets: range) -> None:
        """Share one prefilled prompt with the contiguous slots ``targets`` (n samples: prefill once)."""
        if len(targets) == 0:
            return
        for keys, values in zip(self.keys, self.values):
            keys[targets.start : targets.stop] = keys[source]
            values[targets.start : targets.stop] = values[source]

    @torch.no_grad()
    def move_slot(self, source: int, target: int) -> None:
        """Move a live sequence's cache to another slot (keeps the live slots contiguous)."""
        for keys, values in zip(self.keys, self.values):
            keys[target] = keys[source]
            values[target] = values[source]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One new token for each of the first B slots: tokens and positions are (B,). Returns (B, H).

        Live sequences occupy slots 0..B-1 (the engine keeps them contiguous), so the cache is read
        through slice views, never gathered. A row at position p writes its key/value at column p
        and attends to columns 0..p of its own slot. Attention is written out (a masked batched
        matmul, a softmax, a batched matmul): at one query per row that is cheaper on CPU than the
        generic kernel, and the mask is built once per step for all layers.
            scores = mask + q·Kᵀ  (B·nkv, group, L)   (q carries 1/√hd; mask −inf where column > p)
            out    = softmax(scores)·V
        The residual adds ride on the projections (``addmm``): x + a·Wᵀ in one op.
        """
        batch = tokens.shape[0]
        nh, nkv, hd = self.n_heads, self.n_kv, self.head_dim
        heads = torch.arange(batch * nkv, device=self.device)  # (row, kv head) pairs, row-major
        write_at = heads * self.keys[0].shape[2] + positions.repeat_interleave(nkv)  # rows of the flat (S·nkv·L, hd) cache
        width = int(positions.max()) + 1  # the columns any live row can see
        cos, signed_sin = self.cos[positions][:, None], self.signed_sin[positions][:, None]  # (B, 1, hd)
        hide = torch.arange(width, device=self.device)[None] > positions[:, None]  # (B, L)
        mask = torch.zeros(batch, width, dtype=self.dtype, device=self.device).masked_fill_(hide, float("-inf"))
        mask = mask[:, None, None].expand(batch, nkv, nh // nkv, width).reshape(batch * nkv, nh // nkv, width)
        x = F.embedding(tokens, self.embed)  # (B, H)
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            qkv = self._qkv(layer, x, cos, signed_sin)  # (B, nh + 2·nkv, hd)
            keys.view(-1, hd).index_copy_(0, write_at, qkv[:, nh : nh + nkv].reshape(-1, hd))
            values.view(-1, hd).index_copy_(0, write_at, qkv[:, nh + nkv :].reshape(-1, hd))
            past_k = keys[:batch, :, :width].reshape(batch * nkv, width, hd)  # views: live slots are 0..B−1
            past_v = values[:batch, :, :width].reshape(batch * nkv, width, hd)
            q = qkv[:, :nh].reshape(batch * nkv, nh // nkv, hd)  # the query heads that share each kv head
            probs = torch.softmax(torch.baddbmm(mask, q, past_k.transpose(1, 2)), dim=-1)  # (B·nkv, group, L)
            attn = torch.bmm(probs, past_v).view(batch, nh * hd)
            x = layer.o.add_to(x, attn)  # x + attn·W_oᵀ in one op
            x = layer.down.add_to(x, self._gated(layer, x))
        return x
