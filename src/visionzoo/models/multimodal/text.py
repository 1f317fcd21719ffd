"""CLIP's text encoder — Radford et al., "Learning Transferable Visual Models From Natural
Language Supervision", arXiv:2103.00020, §2.4.

"The text encoder is a Transformer (Vaswani et al., 2017) with the architecture modifications
described in Radford et al. (2019) [GPT-2]": token embedding plus a learned position embedding,
pre-norm blocks with **masked (causal) self-attention** — token i sees tokens 0..i only, "to
preserve the ability to initialize with a pre-trained language model or add language modeling
as an auxiliary objective" — a final LayerNorm, and the feature of the **[EOS] token** ("the
activations of the highest layer of the transformer at the [EOS] token are treated as the
feature representation of the text") projected linearly into the joint embedding space.

The blocks are the zoo's pre-norm :class:`~visionzoo.layers.transformer.Block` (the same as
ViT's) run with ``is_causal=True``, which ``F.scaled_dot_product_attention`` turns into a fused
causal kernel. Because of the causal mask, padding after the end token never reaches the end
token's feature, so no padding mask is needed.

End-of-text pooling: OpenAI's vocabulary puts ``<end_of_text>`` at the highest id (49407), so
OpenAI and open_clip find it with ``tokens.argmax(-1)`` (``eot_token_id=None`` here, the
default). A trained caption vocabulary has its special tokens first (visionzoo's CLIP-style
tokenizer: ``<end_of_text>`` = 2); pass ``eot_token_id`` and the *first* position holding that
id is pooled. Rows without the id pool position 0 (no check: it would cost a device sync per
batch).

Departures, each marked where it happens: LayerNorm eps 1e-5 (PyTorch's default, as OpenAI and
open_clip; ViT's 1e-6 is the JAX original's); the activation is a switch — ``"gelu"`` (exact
GELU, open_clip's default for its non-"quickgelu" configs) or ``"quick_gelu"``
(``x * sigmoid(1.702 x)``, what OpenAI's released CLIP models were trained with).
Initialisation follows OpenAI's code (token embedding N(0, 0.02), position embedding N(0, 0.01),
attention in-projection N(0, D^-0.5), output projections N(0, D^-0.5 (2 layers)^-0.5), MLP
in-layer N(0, (2D)^-0.5), text projection N(0, D^-0.5)), zero biases.

Attribute names (``token_embedding``, ``pos_embed``, ``blocks.N.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``proj``) map from open_clip's flat CLIP text tower
(``token_embedding``, ``positional_embedding``, ``transformer.resblocks.N.{ln_1,
attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_final``,
``text_projection``) by the renames in :mod:`visionzoo.interop.open_clip`.

Shape glossary: N texts, L tokens (<= context length), D width, E joint embedding width,
V vocabulary size.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...layers.transformer import Block
from .._checks import check_positive_int

__all__ = ["QuickGELU", "ACT_LAYERS", "act_layer_for", "TextTransformer", "init_clip_blocks"]


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the sigmoid approximation of GELU (arXiv:1606.08415, §2) that
    OpenAI's CLIP models were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


ACT_LAYERS: dict[str, Callable[[], nn.Module]] = {"gelu": nn.GELU, "quick_gelu": QuickGELU}

# PyTorch's default eps, as OpenAI's and open_clip's CLIP (ViT uses 1e-6).
LayerNorm5: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-5)


def act_layer_for(name: object, *, model: str) -> Callable[[], nn.Module]:
    """The activation factory named ``name`` ("gelu" or "quick_gelu")."""
    if name not in ACT_LAYERS:
        valid = ", ".join(repr(k) for k in ACT_LAYERS)
        raise ModelArgumentError(f"{model}: act_layer must be one of {valid}, got {name!r}")
    return ACT_LAYERS[name]  # type: ignore[index]


def init_clip_blocks(blocks: nn.Sequential, width: int) -> None:
    """OpenAI's CLIP initialisation of a stack of blocks (see the module docstring)."""
    proj_std = width**-0.5 * (2 * len(blocks)) ** -0.5
    attn_std = width**-0.5
    fc_std = (2 * width) ** -0.5
    for block in blocks:
        nn.init.normal_(block.attn.qkv.weight, std=attn_std)
        nn.init.normal_(block.attn.proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.fc1.weight, std=fc_std)
        nn.init.normal_(block.mlp.fc2.weight, std=proj_std)
        for lin in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)


class TextTransformer(nn.Module):
    """CLIP's causal text transformer with end-of-text pooling.

    Args:
        vocab_size: V, rows of the token embedding (>= the tokenizer's vocabulary size).
        context_length: the longest token sequence (rows of the position embedding).
        width: D.
        layers: number of blocks.
        heads: attention heads (must divide D; CLIP uses D / 64).
        output_dim: E, the joint embedding width of the projection; None: no projection.
        mlp_ratio: MLP hidden width / D.
        act_layer: "gelu" or "quick_gelu".
        causal: the causal mask of the paper (False: bidirectional attention, an ablation).
        eot_token_id: id of the end-of-text token to pool at; None: the position of the
            highest id (OpenAI's vocabulary).
        length_buckets: with the causal mask, the feature at the end-of-text token depends on
            the tokens up to it alone, so ``forward`` runs the rows sorted by that length in
            this many equal-count groups, each cut to its own longest row: the same features
            for less work on padded batches (1: one group cut to the batch's longest row).
            Not in the paper; a speed switch. Bidirectional towers always run whole.

    ``forward(tokens)``: Tensor[N, L] int64 -> Tensor[N, E] (unnormalised);
    ``forward_tokens(tokens)``: -> Tensor[N, L, D], every token after the final LayerNorm.
    """

    def __init__(
        self,
        *,
        vocab_size: int = 49408,
        context_length: int = 77,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        output_dim: int | None = 512,
        mlp_ratio: float = 4.0,
        act_layer: str = "gelu",
        causal: bool = True,
        eot_token_id: int | None = None,
        length_buckets: int = 1,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (
            ("length_buckets", length_buckets),
            ("vocab_size", vocab_size),
            ("context_length", context_length),
            ("width", width),
            ("layers", layers),
            ("heads", heads),
        ):
            check_positive_int(arg, value, model=name)
        if output_dim is not None:
            check_positive_int("output_dim", output_dim, model=name)
        if width % heads:
            raise ModelArgumentError(f"{name}: width {width} must be divisible by heads {heads}")
        ratio_ok = isinstance(mlp_ratio, (int, float)) and not isinstance(mlp_ratio, bool)
        if not ratio_ok or not mlp_ratio > 0 or int(width * mlp_ratio) < 1:
            raise ModelArgumentError(f"{name}: mlp_ratio must be a number > 0, got {mlp_ratio!r}")
        if not isinstance(causal, bool):
            raise ModelArgumentError(f"{name}: causal must be True or False, got {causal!r}")
        if eot_token_id is not None and (
            isinstance(eot_token_id, bool)
            or not isinstance(eot_token_id, int)
            or not 0 <= eot_token_id < vocab_size
        ):
            raise ModelArgumentError(
                f"{name}: eot_token_id must be None (argmax pooling) or an id in "
                f"[0, {vocab_size}), got {eot_token_id!r}"
            )
        act = act_layer_for(act_layer, model=name)

        self.vocab_size = vocab_size
        self.context_length = context_length
        self.width = width
        self.output_dim = output_dim
        self.causal = causal
        self.eot_token_id = eot_token_id
        self.length_buckets = length_buckets

        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.empty(1, context_length, width))  # (1, L_max, D)
        self.blocks = nn.Sequential(
            *(
                Block(width, heads, mlp_ratio=mlp_ratio, act_layer=act, norm_layer=LayerNorm5)
                for _ in range(layers)
            )
        )
        self.norm = LayerNorm5(width)  # OpenAI's ln_final
        # A bias-free linear map, as the paper's W_t (OpenAI stores it as a D x E matrix).
        self.proj = nn.Linear(width, output_dim, bias=False) if output_dim else None
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        init_clip_blocks(self.blocks, self.width)
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=self.width**-0.5)

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ModelArgumentError(
                f"expected token ids Tensor[N, L] (int64), got shape {tuple(tokens.shape)} "
                f"and dtype {tokens.dtype}"
            )
        if tokens.shape[1] > self.context_length:
            raise ModelArgumentError(
                f"{tokens.shape[1]} tokens exceed the text model's context_length "
                f"{self.context_length}; tokenize with context_length={self.context_length}"
            )

    def forward_tokens(self, tokens: Tensor) -> Tensor:
        """Tensor[N, L] ids -> Tensor[N, L, D] after the final LayerNorm."""
        self._check_tokens(tokens)
        length = tokens.shape[1]
        x = self.token_embedding(tokens)  # (N, L) -> (N, L, D)
        # Shorter inputs (a tokenizer with a smaller context) use the first L positions.
        x = x + self.pos_embed[:, :length]
        for block in self.blocks:
            x = block(x, is_causal=self.causal)
        return self.norm(x)

    def eot_index(self, tokens: Tensor) -> Tensor:
        """Tensor[N, L] ids -> Tensor[N] int64: the position pooled for each row."""
        if self.eot_token_id is None:
            return tokens.argmax(dim=-1)  # OpenAI: <end_of_text> has the highest id
        # The first occurrence (argmax returns the first maximum of the 0/1 row).
        return (tokens == self.eot_token_id).int().argmax(dim=-1)

    def pool(self, x: Tensor, tokens: Tensor) -> Tensor:
        """Tensor[N, L, D] -> Tensor[N, D]: the end-of-text token's feature."""
        index = self.eot_index(tokens)
        return x[torch.arange(x.shape[0], device=x.device), index]  # (N, D)

    def _pooled(self, tokens: Tensor) -> Tensor:
        """Tensor[N, L] -> Tensor[N, D], the end-of-text features; causal towers run the rows
        in ``length_buckets`` groups by end-of-text position, each cut after its last one."""
        if not self.causal or tokens.shape[0] == 0:
            return self.pool(self.forward_tokens(tokens), tokens)
        self._check_tokens(tokens)  # the full width, before the cut
        index = self.eot_index(tokens)  # (N,)
        order = index.argsort(stable=True)  # (N,) rows by end position
        parts = []
        for rows in order.tensor_split(min(self.length_buckets, tokens.shape[0])):
            keep = int(index[rows].max()) + 1  # positions after every end never reach one
            part = self.forward_tokens(tokens[rows, :keep])  # (n_g, keep, D)
            parts.append(part[torch.arange(len(rows), device=part.device), index[rows]])
        return torch.cat(parts)[order.argsort()]  # back to the input order, (N, D)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self._pooled(tokens)  # (N, D)
        return self.proj(x) if self.proj is not None else x  # (N, E)
