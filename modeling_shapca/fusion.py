"""Adaptive fusion (paper section 3.5, Eqs. 8-11)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def bridging_term(context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 8: `B = mean_rows(C^T C / sqrt(D))`, one `D`-vector per example.

    `C` is `(batch, n_c, D)`; only real context tokens (`context_mask`) count. The `D x D`
    matrix is never built: its row mean is `(1/D) * (sum_d C[:, d])^T C`. An example without
    context gets `B = 0`.
    """
    c = context * context_mask.unsqueeze(-1).to(context.dtype)
    dim = c.shape[-1]
    row_sums = c.sum(-1, keepdim=True)  # (batch, n_c, 1)
    return (row_sums * c).sum(1) / (dim * math.sqrt(dim))


class AdaptiveFusion(nn.Module):
    """Context-gated cross-attention from text tokens to image regions.

    Eqs. 8-10 as printed: `Q_v = H_v W_q`, `K_t = H_t W_k`, `V_t = H_t W_v`, `C = H_c W_c`,
    `g_q = tanh(Linear1([Q_v; B]))`, `g_k = tanh(Linear2([K_t; B]))`,
    `Q_v' = g_q * Q_v + (1 - g_q) * B`, `K_t' = g_k * K_t + (1 - g_k) * B`.

    Eq. 11 is dimensionally inconsistent as printed (queries from the image would give an
    `n_v x D` result while `M_t` is `n_t x D`). Interpretation used here: the text tokens
    query the image, multi-head,
    `M_t = LayerNorm(V_t + softmax(K_t' Q_v'^T / sqrt(d_head)) (H_v W_o))`.

    With `adaptive=False` (ablation "w/o context in fusion") the gates are skipped:
    `Q_v' = Q_v`, `K_t' = K_t`.
    """

    def __init__(
        self,
        text_dim: int,
        vision_dim: int,
        dim: int,
        num_heads: int,
        dropout: float = 0.1,
        adaptive: bool = True,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion dim {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads, self.adaptive = dim, num_heads, adaptive
        self.query = nn.Linear(vision_dim, dim)  # W_q
        self.key = nn.Linear(text_dim, dim)  # W_k
        self.value = nn.Linear(text_dim, dim)  # W_v
        self.region_value = nn.Linear(vision_dim, dim)  # W_o
        if adaptive:
            self.context = nn.Linear(text_dim, dim)  # W_c
            self.query_gate = nn.Linear(2 * dim, dim)  # Linear1
            self.key_gate = nn.Linear(2 * dim, dim)  # Linear2
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    @staticmethod
    def _gate(features: torch.Tensor, bridge: torch.Tensor, gate: nn.Linear) -> torch.Tensor:
        """Eqs. 9-10: `g = tanh(Linear([X; B]))`, `X' = g * X + (1 - g) * B`."""
        b = bridge.unsqueeze(1).expand_as(features)
        g = torch.tanh(gate(torch.cat([features, b], dim=-1)))
        # lerp (g * X + (1 - g) * B in one kernel) takes one dtype. Under CUDA autocast `B` is
        # fp32 (its sums run in fp32) while X and g are bf16/fp16: the gate keeps X's dtype, the
        # one the attention that consumes it runs in. Without autocast the casts are no-ops.
        return torch.lerp(b.to(features.dtype), features, g.to(features.dtype))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def forward(
        self,
        text_states: torch.Tensor,
        context_states: torch.Tensor,
        context_mask: torch.Tensor,
        region_states: torch.Tensor,
        region_mask: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            text_states: `H_t`, `(batch, n_t, text_dim)` word features.
            context_states: `H_c`, `(batch, n_c, text_dim)` context token features.
            context_mask: `(batch, n_c)` bool, real context tokens.
            region_states: `H_v`, `(batch, n_v, vision_dim)` image regions.
            region_mask: `(batch, n_v)` bool, real regions (at least one per example).

        Returns:
            `M_t`, `(batch, n_t, dim)`.
        """
        queries = self.query(region_states)
        keys = self.key(text_states)
        values = self.value(text_states)
        region_values = self.region_value(region_states)
        if self.adaptive:
            bridge = bridging_term(self.context(context_states), context_mask)
            queries = self._gate(queries, bridge, self.query_gate)
            keys = self._gate(keys, bridge, self.key_gate)
        # Text tokens attend over image regions (Eq. 11, interpretation in the class docstring).
        attended = F.scaled_dot_product_attention(
            self._heads(keys),
            self._heads(queries),
            self._heads(region_values),
            attn_mask=region_mask[:, None, None, :],
        )
        attended = attended.transpose(1, 2).reshape(values.shape)
        return self.norm(values + self.dropout(attended))


__all__ = ["AdaptiveFusion", "bridging_term"]
