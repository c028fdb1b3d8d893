"""A Llama-style decoder-only transformer with a KV cache, in one file.

RMSNorm, rotary positions, SwiGLU, optional grouped-query attention. The
forward signature follows Hugging Face Optimum's `text-generation-with-past`
I/O (input_ids, attention_mask, position_ids, past key/values -> logits,
present key/values), so the exported graph runs under the same TextGenerator
as Optimum-exported Hugging Face models.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class LMConfig:
    vocab_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4  # < n_head: grouped-query attention
    d_model: int = 128
    ffn_mult: float = 8 / 3  # SwiGLU hidden = ffn_mult * d_model, rounded up to a multiple of 32
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def __post_init__(self):
        if self.d_model % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError("d_model must divide by n_head, and n_head by n_kv_head")
        if min(self.n_layer, self.n_head, self.n_kv_head, self.d_model, self.vocab_size) < 1:
            raise ValueError("sizes must be positive")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ffn_hidden(self) -> int:
        return 32 * math.ceil(self.ffn_mult * self.d_model / 32)


PRESETS = {
    "nano": LMConfig(n_layer=2, n_head=2, n_kv_head=2, d_model=64),
    "tiny": LMConfig(n_layer=4, n_head=4, n_kv_head=4, d_model=128),
    "small": LMConfig(n_layer=8, n_head=8, n_kv_head=4, d_model=256),
    "base": LMConfig(n_layer=12, n_head=12, n_kv_head=4, d_model=768, max_seq_len=1024),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, cos, sin):
    # x: (B, heads, T, head_dim); cos/sin: (B, 1, T, head_dim/2). Rotates (first half, second half) pairs.
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.n_head * hd, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.n_kv_head * hd, bias=False)
        self.o = nn.Linear(cfg.n_head * hd, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, mask, past_k, past_v):
        B, T, _ = x.shape
        c = self.cfg
        q = self.q(x).view(B, T, c.n_head, c.head_dim).transpose(1, 2)  # (B, heads, T, head_dim)
        k, v = self.kv(x).view(B, T, 2, c.n_kv_head, c.head_dim).permute(2, 0, 3, 1, 4)  # (B, kv_heads, T, hd) each
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)  # (B, kv_heads, past+T, head_dim)
            v = torch.cat([past_v, v], dim=2)
        present = (k, v)
        if c.n_kv_head != c.n_head:
            rep = c.n_head // c.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        # Plain attention math: it exports to a handful of ONNX nodes (SDPA decomposes into many).
        att = (q @ k.transpose(-2, -1)) * (c.head_dim ** -0.5) + mask  # (B, heads, T, past+T)
        y = att.softmax(dim=-1) @ v  # (B, heads, T, head_dim)
        return self.o(y.transpose(1, 2).reshape(B, T, c.d_model)), present


class MLP(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, past_k=None, past_v=None):
        a, present = self.attn(self.attn_norm(x), cos, sin, mask, past_k, past_v)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), present


class LM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None,
                output_hidden_states=False):
        """input_ids (B, T); attention_mask (B, past+T) of 1/0; position_ids (B, T);
        past_key_values: list of (key, value), each (B, kv_heads, past, head_dim).
        Returns logits (B, T, vocab), presents (one (key, value) per layer) and,
        when asked, the hidden state after each block."""
        B, T = input_ids.shape
        past = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).expand(B, T)
        freqs = position_ids[:, None, :, None].float() * self.inv_freq  # (B, 1, T, head_dim/2)
        cos, sin = freqs.cos(), freqs.sin()
        # Query i (absolute position past+i) sees key j when j <= past+i and the key is not padding.
        q_pos = torch.arange(T, device=input_ids.device)[:, None] + past
        k_pos = torch.arange(past + T, device=input_ids.device)[None, :]
        mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, past+T)
        if attention_mask is not None:
            # Every query also sees itself, so a padding row never has an all-masked softmax (NaN).
            mask = mask & attention_mask[:, None, None, :].bool() | (k_pos == q_pos)  # (B, 1, T, past+T)
        x = self.embed(input_ids)  # (B, T, d_model)
        # Additive mask, built once for all layers: exports to fewer nodes than a boolean one.
        mask = torch.where(mask, 0.0, torch.finfo(x.dtype).min).to(x.dtype)  # (B or 1, 1, T, past+T)
        presents, hidden = [], []
        for i, block in enumerate(self.blocks):
            pk, pv = past_key_values[i] if past_key_values is not None else (None, None)
            x, present = block(x, cos, sin, mask, pk, pv)
            presents.append(present)
            hidden.append(x)
        logits = self.head(self.norm(x))  # (B, T, vocab)
        if output_hidden_states:
            return logits, presents, hidden
        return logits, presents
