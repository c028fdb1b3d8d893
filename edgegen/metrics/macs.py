"""Multiply-accumulates per image, counted by forward hooks on Conv2d, ConvTranspose2d and Linear.

    Conv2d            output pixels x C_out x (C_in / groups) x kh x kw
    ConvTranspose2d   input pixels  x C_in  x (C_out / groups) x kh x kw   (every input pixel meets every tap)
    Linear            output rows   x out_features x in_features

Bias additions, norms, activations and pooling are not counted (they are
small next to these). The count is for one image: the total is divided by the
batch size of the first example input.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _conv(m: nn.Conv2d, inputs, output) -> int:
    kh, kw = m.kernel_size
    return output.numel() * (m.in_channels // m.groups) * kh * kw  # output.numel() = B x C_out x H_out x W_out


def _conv_transpose(m: nn.ConvTranspose2d, inputs, output) -> int:
    kh, kw = m.kernel_size
    return inputs[0].numel() * (m.out_channels // m.groups) * kh * kw  # inputs[0].numel() = B x C_in x H_in x W_in


def _linear(m: nn.Linear, inputs, output) -> int:
    return output.numel() * m.in_features  # output.numel() = rows x out_features


COUNTERS = {nn.Conv2d: _conv, nn.ConvTranspose2d: _conv_transpose, nn.Linear: _linear}


def macs(model: nn.Module, *example_inputs, **kwargs) -> int:
    """MACs of one forward pass of `model(*example_inputs, **kwargs)`, per image (batch item)."""
    total = [0]
    handles = []
    for m in model.modules():
        counter = COUNTERS.get(type(m))
        if counter is not None:
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, counter=counter: total.__setitem__(0, total[0] + counter(mod, inp, out))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    batch = example_inputs[0].shape[0] if example_inputs and example_inputs[0].dim() > 0 else 1
    return total[0] // batch  # every counted layer scales with the batch: exact


__all__ = ["macs"]
