"""ViT variants: ViT for small datasets (SPT + LSA), DeiT with a distillation token, conv-stem ViT."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from e2evision.models import count_parameters, create_model, get_entry, list_models
from e2evision.models.deit import ConvStem, ConvStemVisionTransformer, DistilledVisionTransformer
from e2evision.models.vit import Attention, PatchEmbed
from e2evision.models.vit_sd import (
    SHIFTS,
    LocalitySelfAttention,
    ShiftedPatchTokenization,
    SmallDataViT,
)

MICRO = ["vit_sd_micro", "deit_micro_distilled", "vit_convstem_micro"]
TINY = ["vit_sd_tiny", "deit_tiny_distilled", "vit_convstem_tiny"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# E/gamma crops, quark/gluon jets, boosted top jets, DeepLense common set, DeepLense Model II/III
GEOMETRIES = [(2, 32), (3, 125), (8, 125), (1, 150), (1, 64)]


def test_registered_with_family_and_source():
    assert set(MICRO + TINY) <= set(list_models())
    assert list_models("vit_sd_*") == ["vit_sd_micro", "vit_sd_tiny"]
    for name in MICRO + TINY:
        entry = get_entry(name)
        assert entry.family == "vit" and entry.source
    assert "Lee" in get_entry("vit_sd_tiny").source and "004" in get_entry("vit_sd_tiny").source
    assert "Xiao" in get_entry("vit_convstem_tiny").source


@pytest.mark.parametrize("in_chans,size", GEOMETRIES)
@pytest.mark.parametrize("name", MICRO)
def test_shapes_backward_and_eval_determinism(name, in_chans, size):
    torch.manual_seed(0)
    model = create_model(name, in_chans=in_chans, img_size=size, num_outputs=3)
    x = torch.randn(2, in_chans, size, size)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        assert model.forward_features(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", MICRO)
def test_rectangular_images_and_scalar_fusion(name):
    torch.manual_seed(0)
    model = create_model(name, in_chans=2, img_size=(40, 24), num_outputs=2, num_scalars=3, drop_rate=0.1).eval()
    x, s = torch.randn(4, 2, 40, 24), torch.randn(4, 3)
    with torch.no_grad():
        out = model(x, s)
        assert out.shape == (4, 2)
        assert not torch.allclose(out, model(x, torch.zeros_like(s)))  # the scalars reach the logits
    with pytest.raises(ValueError, match="pass scalars"):
        model(x)


@pytest.mark.parametrize(
    "name,in_chans,size", [("vit_sd_tiny", 1, 150), ("deit_tiny_distilled", 2, 32), ("vit_convstem_tiny", 8, 125)]
)
def test_tiny_presets_build_and_run(name, in_chans, size):
    model = create_model(name, in_chans=in_chans, img_size=size, num_outputs=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, in_chans, size, size)).shape == (1, 3)
    assert model.num_features == 192 and model.patch_embed.grid == (8, 8)
    assert len(model.blocks) == {"vit_sd_tiny": 9, "deit_tiny_distilled": 12, "vit_convstem_tiny": 11}[name]
    if name == "vit_sd_tiny":  # the paper's small-dataset ViT: 12 heads of 16, MLP ratio 2
        attn = model.blocks[0].attn
        assert isinstance(model, SmallDataViT) and isinstance(attn, LocalitySelfAttention)
        assert attn.num_heads == 12 and attn.head_dim == 16 and model.blocks[0].mlp.fc1.out_features == 384
        assert isinstance(model.patch_embed, ShiftedPatchTokenization) and model.patch_embed.shift == 9  # 19 // 2


# --- Shifted Patch Tokenization against its definition ------------------------------------------


def _shift_reference(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Content moved by (dy, dx) pixels: torch.roll, then zero what wrapped round."""
    out = torch.roll(x, shifts=(dy, dx), dims=(2, 3)).clone()
    if dy > 0:
        out[:, :, :dy] = 0
    elif dy < 0:
        out[:, :, dy:] = 0
    if dx > 0:
        out[:, :, :, :dx] = 0
    elif dx < 0:
        out[:, :, :, dx:] = 0
    return out


@pytest.mark.parametrize("size,patch", [((8, 8), 4), ((10, 9), 4), ((7, 7), 3)])
def test_spt_patch_vectors_hold_the_image_and_four_diagonal_shifts(size, patch):
    h, w = size
    c = 2
    tok = ShiftedPatchTokenization(c, size, patch, dim=6)
    x = torch.arange(1, 1 + 2 * c * h * w, dtype=torch.float32).reshape(2, c, h, w)
    s = patch // 2
    assert tok.shift == s
    copies = [x] + [_shift_reference(x, dy * s, dx * s) for _, dy, dx in SHIFTS]
    shifted = tok.shifted_image(x)
    assert shifted.shape == (2, 5 * c, h, w)
    for k, ref in enumerate(copies):
        assert torch.equal(shifted[:, k * c : (k + 1) * c], ref), SHIFTS[k - 1][0] if k else "identity"

    # every token vector is its patch of [x, shifts], zero-padded symmetrically to the patch grid
    pad = tok.padding
    ph, pw = pad[2] + pad[3], pad[0] + pad[1]
    assert (h + ph) % patch == 0 and (w + pw) % patch == 0 and ph < patch and pw < patch
    vecs = tok.patch_vectors(x)
    gh, gw = tok.grid
    assert vecs.shape == (2, gh * gw, 5 * c * patch * patch)
    for k, ref in enumerate(copies):
        ref = F.pad(ref, pad)
        for gi in range(gh):
            for gj in range(gw):
                want = ref[:, :, gi * patch : (gi + 1) * patch, gj * patch : (gj + 1) * patch]
                got = vecs[:, gi * gw + gj].reshape(2, 5, c, patch, patch)[:, k]
                assert torch.equal(got, want)

    # then LayerNorm over the whole vector and a linear projection
    with torch.no_grad():
        nn.init.normal_(tok.norm.weight)
        nn.init.normal_(tok.norm.bias)
        ref_tokens = tok.proj(F.layer_norm(vecs, (vecs.shape[-1],), tok.norm.weight, tok.norm.bias))
        torch.testing.assert_close(tok(x), ref_tokens)


def test_spt_shift_directions_move_a_single_pixel():
    tok = ShiftedPatchTokenization(1, (8, 8), 4, dim=4)
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 5] = 1.0
    out = tok.shifted_image(x)[0]
    where = {name: tuple(torch.nonzero(out[k + 1]).tolist()[0]) for k, (name, _, _) in enumerate(SHIFTS)}
    assert where == {"left-up": (1, 3), "right-up": (1, 7), "left-down": (5, 3), "right-down": (5, 7)}
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 0] = 1.0  # shifted out of the image: zero fill, nothing wraps round
    assert tok.shifted_image(x)[0, 1:4].sum() == 0 and tok.shifted_image(x)[0, 4, 2, 2] == 1


# --- Locality Self-Attention against its definition ---------------------------------------------


def test_lsa_masks_the_diagonal_and_learns_its_temperature():
    torch.manual_seed(0)
    attn = LocalitySelfAttention(32, 4)
    assert isinstance(attn.temperature, nn.Parameter) and attn.temperature.numel() == 1
    assert attn.temperature.item() == pytest.approx(1 / math.sqrt(8))
    attn.keep_attention = True
    x = torch.randn(2, 5, 32)
    out = attn(x)
    a = attn.last_attention
    assert a.shape == (2, 4, 5, 5)
    assert torch.equal(torch.diagonal(a, dim1=-2, dim2=-1), torch.zeros(2, 4, 5))
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 5))

    # an independent computation: softmax(mask(tau * q k^T)) v, then the output projection
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    q, k, v = (t.reshape(2, 5, 4, 8).transpose(1, 2) for t in (q, k, v))
    logits = attn.temperature * q @ k.transpose(-2, -1)
    logits = logits - torch.diag(torch.full((5,), float("inf")))
    ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(out, ref)

    out.pow(2).sum().backward()
    assert attn.temperature.grad is not None and attn.temperature.grad.abs() > 0
    with torch.no_grad():
        attn.temperature.mul_(3.0)
        assert not torch.allclose(attn(x), out)


@pytest.mark.parametrize("cls", [Attention, LocalitySelfAttention])
def test_fused_attention_matches_the_explicit_definition_with_gradients(cls):
    """Without a kept map, attention runs as one scaled_dot_product_attention call; it must give the
    explicit softmax(mask(scale q kᵀ)) v and the same gradients (the temperature's included)."""
    torch.manual_seed(3)
    attn = cls(32, 4).train()  # dropout 0: train mode takes the fused path too
    x = torch.randn(3, 7, 32, requires_grad=True)
    out = attn(x)
    assert attn.last_attention is None  # the fused path keeps no map
    grads = torch.autograd.grad(out.pow(2).sum(), [x, *attn.parameters()])

    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    q, k, v = (t.reshape(3, 7, 4, 8).transpose(1, 2) for t in (q, k, v))
    scale = attn.temperature if cls is LocalitySelfAttention else 8**-0.5
    logits = scale * q @ k.transpose(-2, -1)
    if cls is LocalitySelfAttention:
        logits = logits.masked_fill(torch.eye(7, dtype=torch.bool), float("-inf"))
    ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(3, 7, 32))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, torch.autograd.grad(ref.pow(2).sum(), [x, *attn.parameters()])):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_vit_sd_blocks_use_lsa_and_temperatures_are_not_decayed():
    m = create_model("vit_sd_micro", in_chans=1, img_size=64).eval()
    last = m.blocks[-1].attn
    assert all(isinstance(b.attn, LocalitySelfAttention) for b in m.blocks)
    last.keep_attention = True
    with torch.no_grad():
        m(torch.randn(2, 1, 64, 64))
    assert last.last_attention.shape == (2, 4, 65, 65)
    assert torch.equal(torch.diagonal(last.last_attention, dim1=-2, dim2=-1), torch.zeros(2, 4, 65))
    names = dict(m.named_parameters())
    skip = m.no_weight_decay()
    assert skip == {"pos_embed", "cls_token"} | {f"blocks.{i}.attn.temperature" for i in range(4)}
    assert skip <= set(names)


def test_vit_sd_ablation_switches():
    m = create_model("vit_sd_micro", in_chans=2, img_size=32, use_spt=False, use_lsa=False)
    assert type(m.patch_embed) is PatchEmbed and type(m.blocks[0].attn) is Attention
    assert count_parameters(m) == count_parameters(create_model("vit_micro", in_chans=2, img_size=32))


# --- DeiT ---------------------------------------------------------------------------------------


def test_deit_forward_is_the_mean_of_both_heads_and_both_learn():
    torch.manual_seed(0)
    m = create_model("deit_micro_distilled", in_chans=2, img_size=32, num_outputs=3, num_scalars=2)
    assert isinstance(m, DistilledVisionTransformer)
    assert m.pos_embed.shape == (1, 64 + 2, 64)
    x, s = torch.randn(4, 2, 32, 32), torch.randn(4, 2)
    m.eval()
    with torch.no_grad():
        cls_logits, dist_logits = m.forward_distill(x, s)
        torch.testing.assert_close(m(x, s), (cls_logits + dist_logits) / 2, rtol=0, atol=0)
        assert not torch.allclose(cls_logits, dist_logits)  # two tokens, two heads
        tokens = m.forward_tokens(x)
        torch.testing.assert_close(m.forward_features(x), (tokens[:, 0] + tokens[:, 1]) / 2)
    m.train()
    m(x, s).sum().backward()
    for head in (m.head, m.head_dist):
        assert head.fc.weight.grad is not None and head.fc.weight.grad.abs().sum() > 0
    assert m.dist_token.grad is not None and m.dist_token.grad.abs().sum() > 0
    assert m.no_weight_decay() == {"pos_embed", "cls_token", "dist_token"}


def test_deit_reset_classifier_resets_both_heads():
    m = create_model("deit_micro_distilled", in_chans=1, img_size=64, num_outputs=3, num_scalars=2)
    m.reset_classifier(5, num_scalars=0)
    for head in (m.head, m.head_dist):
        assert head.num_outputs == 5 and head.num_scalars == 0 and head.fc.in_features == 64
    x = torch.randn(2, 1, 64, 64)
    a, b = m.forward_distill(x)
    assert a.shape == b.shape == m(x).shape == (2, 5)


# --- convolutional stem -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,stem,patch,grid", [(32, 8, 1, 8), (125, 32, 4, 8), (150, 38, 5, 8), (64, 16, 2, 8), (40, 10, 2, 5)]
)
def test_conv_stem_reduces_the_image_as_documented(size, stem, patch, grid):
    m = create_model("vit_convstem_micro", in_chans=3, img_size=size)
    assert isinstance(m, ConvStemVisionTransformer) and isinstance(m.patch_embed, ConvStem)
    pe = m.patch_embed
    convs = [mod for mod in pe.stem if isinstance(mod, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [((3, 3), (2, 2), 16), ((3, 3), (2, 2), 32)]
    assert [type(mod) for mod in pe.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2
    assert pe.stem_size == (stem, stem) == (math.ceil(size / 4),) * 2
    assert pe.patchify.proj.kernel_size == (patch, patch) and pe.grid == (grid, grid)
    assert m.patch_size == 4 * patch
    x = torch.randn(2, 3, size, size)
    assert pe.stem(x).shape == (2, 32, stem, stem)
    assert pe(x).shape == (2, grid * grid, 64)


# --- parameter counts from the layer definitions ------------------------------------------------


def _blocks(d: int, depth: int, hidden: int, extra_per_block: int = 0) -> int:
    per = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    return depth * (per + extra_per_block)


@pytest.mark.parametrize("c,size,patch,tokens", [(2, 32, 4, 64), (1, 150, 19, 64), (3, 125, 10, 169)])
def test_vit_sd_micro_parameter_count_from_definition(c, size, patch, tokens):
    d, depth, hidden = 64, 4, 128
    m = create_model("vit_sd_micro", in_chans=c, img_size=size, patch_size=patch)
    pdim = 5 * c * patch * patch  # image + 4 shifts, flattened patch
    spt = 2 * pdim + (pdim * d + d)  # LayerNorm, Linear
    expected = spt + d + (tokens + 1) * d + _blocks(d, depth, hidden, extra_per_block=1) + 2 * d + (d + 1)
    assert count_parameters(m) == expected


def test_deit_and_convstem_micro_parameter_counts_from_definition():
    d, depth, hidden, c = 64, 4, 128, 2
    deit = create_model("deit_micro_distilled", in_chans=c, img_size=32)  # 4-pixel patches, 64 tokens
    expected = (c * 16 * d + d) + 2 * d + 66 * d + _blocks(d, depth, hidden) + 2 * d + 2 * (d + 1)
    assert count_parameters(deit) == expected

    conv = create_model("vit_convstem_micro", in_chans=c, img_size=150)  # 38x38 map, 5x5 patchify
    stem = (9 * c * 16 + 2 * 16) + (9 * 16 * 32 + 2 * 32) + (32 * 25 * d + d)
    expected = stem + d + 65 * d + _blocks(d, depth, hidden) + 2 * d + (d + 1)
    assert count_parameters(conv) == expected


# --- export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MICRO)
def test_export_with_dynamic_batch_matches_eager(name):
    torch.manual_seed(0)
    m = create_model(name, in_chans=1, img_size=64, num_outputs=3, num_scalars=2).eval()
    x, s = torch.randn(2, 1, 64, 64), torch.randn(2, 2)
    batch = torch.export.Dim("batch")
    exported = torch.export.export(m, (x, s), dynamic_shapes=({0: batch}, {0: batch}))
    x3, s3 = torch.randn(3, 1, 64, 64), torch.randn(3, 2)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x3, s3), m(x3, s3))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_jit_trace_matches_eager():
    torch.manual_seed(0)
    m = create_model("vit_sd_micro", in_chans=2, img_size=32, num_outputs=3).eval()
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(m, (x,), check_trace=False)
        x3 = torch.randn(3, 2, 32, 32)  # another batch size
        torch.testing.assert_close(traced(x3), m(x3))


@pytest.mark.parametrize("size,patch", [((32, 32), 4), ((125, 125), 16), ((30, 45), 7)])
def test_patch_embed_is_the_strided_convolution_of_its_weights(size, patch):
    """PatchEmbed computes its Conv2d as one product over flattened patches: same numbers and
    gradients as the convolution itself, padding included (125 → 128, 30×45 → 35×49)."""
    torch.manual_seed(5)
    embed = PatchEmbed(3, size, patch, 24)
    x = torch.randn(2, 3, *size, requires_grad=True)
    out = embed(x)
    ref = embed.proj(F.pad(x, embed.padding)).flatten(2).transpose(1, 2)
    assert out.shape == (2, embed.num_patches, 24)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad(out.pow(2).sum(), [x, embed.proj.weight])
    want = torch.autograd.grad(ref.pow(2).sum(), [x, embed.proj.weight])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
