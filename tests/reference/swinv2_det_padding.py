"""The official SwinV2 at map sizes its own code cannot take, padded as the official Swin detection
code pads: the reference for frozenbench's SwinV2 at 640 px, 480x640 or 800x1216.

microsoft/Swin-Transformer's SwinV2 (``official_swinv2.py``) fixes each block's map at construction
and partitions it into windows with a ``view`` that fails unless the map is a window multiple;
there is no official SwinV2 detection or segmentation code. The official Swin V1 detection and
segmentation code (``official_swin_det.py``) is the official way Swin takes other sizes: pad the
map to the window multiple, then shift, with the attention mask of the padded grid. Below, that
padding (the lines marked ``det``, copied from ``official_swin_det.SwinTransformerBlock.forward``
and ``BasicLayer.forward``) wrapped around the official SwinV2 block's own math (the other lines,
from ``official_swinv2.SwinTransformerBlock.forward``), run with the official model's modules.
At maps that are window multiples it computes exactly what the official SwinV2 does (checked in
``tests/test_official_features.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..third_party.official_swinv2 import window_partition, window_reverse


def det_attn_mask(H, W, window_size, shift_size, device):
    # det: official_swin_det.BasicLayer.forward, "calculate attention mask for SW-MSA"
    Hp = int(np.ceil(H / window_size)) * window_size
    Wp = int(np.ceil(W / window_size)) * window_size
    img_mask = torch.zeros((1, Hp, Wp, 1), device=device)  # 1 Hp Wp 1
    h_slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    w_slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    cnt = 0
    for h in h_slices:
        for w in w_slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, window_size)  # nW, window_size, window_size, 1
    mask_windows = mask_windows.view(-1, window_size * window_size)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))


def block_forward(blk, x, H, W):
    """``official_swinv2.SwinTransformerBlock.forward`` of a map of H x W tokens, padded as the det code pads."""
    B, L, C = x.shape
    assert L == H * W, "input feature has wrong size"

    shortcut = x
    x = x.view(B, H, W, C)

    # det: pad feature maps to multiples of window size
    pad_r = (blk.window_size - W % blk.window_size) % blk.window_size
    pad_b = (blk.window_size - H % blk.window_size) % blk.window_size
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, Hp, Wp, _ = x.shape

    # cyclic shift
    if blk.shift_size > 0:
        shifted_x = torch.roll(x, shifts=(-blk.shift_size, -blk.shift_size), dims=(1, 2))
        attn_mask = det_attn_mask(H, W, blk.window_size, blk.shift_size, x.device)  # det
    else:
        shifted_x = x
        attn_mask = None

    # partition windows
    x_windows = window_partition(shifted_x, blk.window_size)  # nW*B, window_size, window_size, C
    x_windows = x_windows.view(-1, blk.window_size * blk.window_size, C)  # nW*B, window_size*window_size, C

    # W-MSA/SW-MSA
    attn_windows = blk.attn(x_windows, mask=attn_mask)  # nW*B, window_size*window_size, C

    # merge windows
    attn_windows = attn_windows.view(-1, blk.window_size, blk.window_size, C)
    shifted_x = window_reverse(attn_windows, blk.window_size, Hp, Wp)  # B H' W' C

    # reverse cyclic shift
    if blk.shift_size > 0:
        x = torch.roll(shifted_x, shifts=(blk.shift_size, blk.shift_size), dims=(1, 2))
    else:
        x = shifted_x

    # det: drop the padding
    if pad_r > 0 or pad_b > 0:
        x = x[:, :H, :W, :].contiguous()

    x = x.view(B, H * W, C)
    x = shortcut + blk.drop_path(blk.norm1(x))

    # FFN
    x = x + blk.drop_path(blk.norm2(blk.mlp(x)))

    return x


def block_for_map(blk, H, W):
    """The block the official code builds for an H x W map (``SwinTransformerBlock.__init__``): on a
    map no larger than the window it attends to the whole map without shift; blk's weights."""
    if min(H, W) > blk.window_size:
        return blk
    small = type(blk)(
        blk.dim,
        (H, W),
        blk.num_heads,
        window_size=blk.window_size,
        shift_size=0,
        mlp_ratio=blk.mlp_ratio,
        pretrained_window_size=blk.attn.pretrained_window_size[0],
    )
    rebuilt = ("relative_coords_table", "relative_position_index", "attn_mask")  # buffers of the window size
    missing, unexpected = small.load_state_dict(
        {k: v for k, v in blk.state_dict().items() if not k.endswith(rebuilt)}, strict=False
    )
    assert not unexpected and all(k.endswith(rebuilt) for k in missing)
    return small.eval()


def stage_outputs(model, x):
    """Every stage's output (before its patch merging), NCHW, of the official SwinV2 ``model`` on
    ``x`` of any size that halves evenly down the stages. A block keeps the window and shift the
    model was built with (build it at a size where no stage is reduced to a single window) unless
    its map is no larger than the window (:func:`block_for_map`)."""
    x = model.patch_embed.proj(x)
    H, W = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    if model.patch_embed.norm is not None:
        x = model.patch_embed.norm(x)
    x = model.pos_drop(x)
    outs = []
    for layer in model.layers:
        for blk in layer.blocks:
            x = block_forward(block_for_map(blk, H, W), x, H, W)
        outs.append(x.transpose(1, 2).reshape(x.shape[0], -1, H, W))
        if layer.downsample is not None:
            layer.downsample.input_resolution = (H, W)  # the official merging reads its map size from here
            x = layer.downsample(x)
            H, W = H // 2, W // 2
    return outs
