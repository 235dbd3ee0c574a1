"""Vision Transformer for small datasets (Lee, Lee & Song 2021, "Vision Transformer for Small-Size
Datasets", arXiv:2112.13492): the ViT of :mod:`e2evision.models.vit` with two changes.

* **Shifted Patch Tokenization (SPT).** The image is concatenated along channels with four copies
  of itself shifted diagonally by half a patch (left-up, right-up, left-down, right-down; pixels
  shifted in from outside are zero, nothing wraps round), so ``C`` channels become ``5·C``. The
  result is split into non-overlapping patches, each flattened, layer-normalised and linearly
  projected to the embedding width. Each token thus sees a wider neighbourhood than its patch.
* **Locality Self-Attention (LSA).** Attention logits ``q·k`` are multiplied by a *learnable*
  temperature (one scalar per block, initialised to ``1/sqrt(head_dim)``, the fixed ViT scale),
  and the diagonal (each token's attention to itself) is set to ``-inf`` before the softmax, so
  attention goes to the other tokens.

Conventions of this implementation:

* shift ``s = patch_size // 2`` pixels (floor for odd patches, e.g. 9 for the 19-pixel patches of
  150×150 lensing images); with ``patch_size == 1`` the shift is 0 and the copies equal the image;
* the shifts act on the input image at its own size; the 5·C-channel result is then zero-padded
  symmetrically to a multiple of the patch size (the padding is fixed at construction, as in
  :class:`~e2evision.models.vit.PatchEmbed`), so ``forward`` has no data-dependent control flow;
* a patch vector is laid out as ``(5·C, p, p)`` flattened: channel block 0 is the image, blocks
  1–4 the shifts in the order of :data:`SHIFTS` (the layout of ``F.unfold``);
* the class token and the diagonal mask cover every token, the class token included (the paper
  masks the whole diagonal).

The paper's small-dataset ViT (Tiny-ImageNet/CIFAR) is 192 wide, 9 blocks, 12 heads of 16 and an
MLP ratio of 2: ``vit_sd_tiny`` is that. It trained with stochastic depth 0.1; the preset keeps the
zoo's default of 0 (pass ``drop_path_rate=0.1`` to follow the paper). ``use_spt``/``use_lsa``
switch either change off for the paper's ablation. Seed 004 (dark-matter substructure in DeepLense
images, ROC-AUC 0.956) fuses extra physics features before the head: build with ``num_scalars``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from e2evision.models.registry import register_model
from e2evision.models.vit import Attention, PatchEmbed, VisionTransformer

#: The four diagonal shifts as (name, rows, columns) in units of the shift: content moves this way.
SHIFTS: tuple[tuple[str, int, int], ...] = (
    ("left-up", -1, -1),
    ("right-up", -1, 1),
    ("left-down", 1, -1),
    ("right-down", 1, 1),
)


class ShiftedPatchTokenization(nn.Module):
    """SPT: ``[x, 4 diagonal half-patch shifts of x]`` → patches → flatten → LayerNorm → Linear.

    Same call signature and ``num_patches``/``grid``/``padding`` attributes as
    :class:`~e2evision.models.vit.PatchEmbed`, so it plugs into ``VisionTransformer(embed_layer=)``.
    """

    def __init__(self, in_chans: int, img_size: tuple[int, int], patch_size: int, dim: int) -> None:
        super().__init__()
        h, w = img_size
        self.in_chans = in_chans
        self.img_size = (h, w)
        self.patch_size = patch_size
        self.shift = patch_size // 2
        ph, pw = (-h) % patch_size, (-w) % patch_size
        self.padding = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # (left, right, top, bottom)
        self.grid = ((h + ph) // patch_size, (w + pw) // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_dim = (1 + len(SHIFTS)) * in_chans * patch_size * patch_size
        self.norm = nn.LayerNorm(self.patch_dim)
        self.proj = nn.Linear(self.patch_dim, dim)

    def shifted_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, 5·C, H, W)``: the image, then its shifts in :data:`SHIFTS` order.

        Copy ``k`` with direction ``(dy, dx)`` is ``out[..., i, j] = x[..., i - dy·s, j - dx·s]``
        where that pixel exists and 0 elsewhere: one zero pad by ``s`` and four static crops.
        """
        s = self.shift
        h, w = self.img_size
        padded = F.pad(x, (s, s, s, s))
        copies = [x]
        for _, dy, dx in SHIFTS:
            top, left = s - dy * s, s - dx * s
            copies.append(padded[:, :, top : top + h, left : left + w])
        return torch.cat(copies, dim=1)

    def patch_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened patches of the shifted image before the LayerNorm: ``(N, tokens, 5·C·p·p)``.

        Tokens run row-major over the patch grid; each vector is its ``(5·C, p, p)`` block flattened.
        """
        y = self.shifted_image(x)
        if any(self.padding):  # decided at construction, not by the data
            y = F.pad(y, self.padding)
        p = self.patch_size
        gh, gw = self.grid
        c5 = y.shape[1]
        y = y.reshape(-1, c5, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return y.reshape(-1, gh * gw, self.patch_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(self.patch_vectors(x)))  # (N, tokens, dim)


class LocalitySelfAttention(Attention):
    """LSA: multi-head attention with a learnable temperature and the self-token masked out.

    ``softmax(mask_diag(τ · q kᵀ)) v`` with ``τ`` an ``nn.Parameter`` (a scalar per block, initially
    ``head_dim ** -0.5``) and the diagonal logits set to ``-inf``, so they are exactly 0 after the
    softmax. Keeps the last attention map on request, like :class:`Attention`.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.temperature = nn.Parameter(torch.full((), self.head_dim**-0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (b, heads, n, head_dim)
        others = ~torch.eye(n, dtype=torch.bool, device=x.device)  # True where a token may attend
        out = self.attend(q * self.temperature, k, v, mask=others)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class SmallDataViT(VisionTransformer):
    """ViT with Shifted Patch Tokenization and Locality Self-Attention (either can be switched off)."""

    def __init__(
        self,
        in_chans: int,
        img_size: tuple[int, int],
        num_outputs: int = 1,
        *,
        use_spt: bool = True,
        use_lsa: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(
            in_chans,
            img_size,
            num_outputs,
            embed_layer=ShiftedPatchTokenization if use_spt else PatchEmbed,
            attn_layer=LocalitySelfAttention if use_lsa else Attention,
            **kwargs,
        )

    def no_weight_decay(self) -> set[str]:
        """Tokens, position embeddings and the LSA temperatures."""
        temps = {name for name, _ in self.named_parameters() if name.endswith(".attn.temperature")}
        return super().no_weight_decay() | temps


_SD_SOURCE = "Lee, Lee & Song 2021 (ViT for small-size datasets: SPT + LSA); seed 004 (DeepLense substructure)"


@register_model(
    "vit_sd_tiny",
    description="ViT for small datasets (SPT + LSA; 192 wide, 9 blocks, 12 heads of 16)",
    family="vit",
    source=_SD_SOURCE,
    embed_dim=192,
    depth=9,
    num_heads=12,
    mlp_ratio=2.0,
)
@register_model(
    "vit_sd_micro",
    description="CPU-sized ViT for small datasets (SPT + LSA; 64 wide, 4 blocks, 4 heads)",
    family="vit",
    source=_SD_SOURCE,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
)
def vit_sd(in_chans: int, img_size: tuple[int, int], num_outputs: int = 1, **kwargs) -> SmallDataViT:
    return SmallDataViT(in_chans, img_size, num_outputs, **kwargs)
