"""Blocks shared by several model families (DESIGN.md §2, house style §6.6)."""

from .transformer import (
    Attention,
    Block,
    DropPath,
    LayerNorm6,
    Mlp,
    PatchEmbed,
    drop_path,
    resize_pos_embed,
)

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "LayerNorm6",
    "Mlp",
    "PatchEmbed",
    "drop_path",
    "resize_pos_embed",
]
