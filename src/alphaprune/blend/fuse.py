"""Exact fusion of a :class:`BlendedVGG` at alpha = 0 into a plain registry VGG.

At alpha = 0 the chain ``B_{i-1} -> conv_i -> A_i`` is linear, so per kernel position

    W'_i[a, c] = sum_{o, m} A_i[a, o] * W_i[o, m] * B_{i-1}[m, c]

``BN'_i`` becomes the compact unit's BN and the classifier absorbs the last ``B``
(global average pooling commutes with a 1x1 conv). The B convs have no bias, so zero
padding commutes and the result is exact up to float rounding.
"""

from __future__ import annotations

import torch

from alphaprune.blend.blended import BlendedVGG
from alphaprune.models import create_model
from alphaprune.models.vgg import VGG

__all__ = ["fuse"]


@torch.no_grad()
def fuse(blended: BlendedVGG, arch: str) -> VGG:
    """Fold every branch into one compact VGG with the branches' widths.

    Args:
        blended: the trained blended model (its alpha is ignored: fusion is the alpha = 0 net).
        arch: registry name of the base VGG (``vgg16`` ...), for the compact model.
    """
    units = list(blended.features)
    in_ch = units[0].conv.in_channels
    fused = create_model(arch, num_classes=blended.classifier.out_features, in_channels=in_ch,
                         widths=blended.widths)
    prev_B = None  # (n_{i-1}, k_{i-1}) matrix of the previous unit's B
    for u, f in zip(units, fused.features):
        W = u.conv.weight.double()                       # (n_i, n_{i-1}, kh, kw)
        A = u.A.weight.double()[:, :, 0, 0]              # (k_i, n_i)
        Wa = torch.einsum("ao,omhw->amhw", A, W)
        if prev_B is not None:
            Wa = torch.einsum("amhw,mc->achw", Wa, prev_B)
        f.conv.weight.copy_(Wa.to(f.conv.weight.dtype))
        f.bn.load_state_dict(u.bn2.state_dict())
        prev_B = u.B.weight.double()[:, :, 0, 0]         # (n_i, k_i)
    Wc = blended.classifier.weight.double() @ prev_B
    fused.classifier.weight.copy_(Wc.to(fused.classifier.weight.dtype))
    fused.classifier.bias.copy_(blended.classifier.bias)
    return fused
