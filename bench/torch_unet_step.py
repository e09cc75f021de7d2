#!/usr/bin/python3
"""Time training steps and inference of octflow's U-Net in PyTorch on the CPU.

The peer for bench/train.bench.ts: the same layers as src/ml/unet.ts (a 7x7 first conv,
3x3 valid convs, batch norm after the second conv of each block, 2x2 max pools, 2x2
stride-2 transposed convs, centre-cropped skips, spatial dropout, multiscale fusion of
nearest-upsampled decoder outputs, a 3x3 output conv), the same loss (0.5 x (class-balanced
cross-entropy + 1 - soft fluid Dice)) and Adam(2e-4, betas 0.5, 0.999). Tensors are NCHW.

Usage: torch_unet_step.py --threads N --base F --depth D --height H --width W
       [--classes C] [--batch B] [--steps S] [--warmup K] [--tile T]
Prints one JSON object: median milliseconds per training step and per inference batch,
and with --tile, per forward pass of one T x T tile (the size whole-B-scan inference uses).
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def centre_crop(t, h, w):
    top = (t.shape[2] - h) // 2
    left = (t.shape[3] - w) // 2
    return t[:, :, top:top + h, left:left + w]


class Block(nn.Module):
    def __init__(self, cin, cout, first_kernel=None):
        super().__init__()
        self.first = nn.Conv2d(cin, cout, first_kernel, padding=first_kernel // 2) if first_kernel else None
        cin = cout if first_kernel else cin
        self.conv1 = nn.Conv2d(cin, cout, 3)
        self.conv2 = nn.Conv2d(cout, cout, 3)
        self.norm = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1)

    def forward(self, x):
        if self.first is not None:
            x = F.relu(self.first(x))
        return F.relu(self.norm(self.conv2(F.relu(self.conv1(x)))))


class Up(nn.Module):
    def __init__(self, cin, cout, rate):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.block = Block(cout * 2, cout)
        self.drop_up = nn.Dropout2d(rate)
        self.drop_skip = nn.Dropout2d(rate)

    def forward(self, x, skip):
        x = self.drop_up(self.up(x))
        skip = self.drop_skip(centre_crop(skip, x.shape[2], x.shape[3]))
        return self.block(torch.cat([x, skip], 1))


class UNet(nn.Module):
    def __init__(self, base, depth, classes, rates):
        super().__init__()
        widths = [base * 2 ** level for level in range(depth)]
        self.encoders = nn.ModuleList(
            [Block(3 if level == 0 else widths[level - 1], widths[level], 7 if level == 0 else None) for level in range(depth)]
        )
        self.decoders = nn.ModuleList(
            [Up(widths[level + 1], widths[level], rates[step]) for step, level in enumerate(range(depth - 2, -1, -1))]
        )
        self.out = nn.Conv2d(sum(widths), classes, 3, padding=1)

    def forward(self, x):
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        scales = [x]
        for step, decoder in enumerate(self.decoders):
            x = decoder(x, skips[len(skips) - 2 - step])
            scales.append(x)
        h, w = x.shape[2], x.shape[3]
        fused = []
        for index, t in enumerate(scales):
            factor = 2 ** (len(scales) - 1 - index)
            if factor > 1:
                t = centre_crop(F.interpolate(t, scale_factor=factor, mode="nearest"), h, w)
            fused.append(t)
        return self.out(torch.cat(fused, 1))


def segmentation_loss(logits, labels, eps=1e-6):
    probabilities = torch.softmax(logits, 1).clamp(1e-7, 1)
    one_hot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
    per_class = -(one_hot * probabilities.log()).sum((0, 2, 3))
    counts = one_hot.sum((0, 2, 3))
    present = (counts > 0).float()
    cross_entropy = (per_class / counts.clamp(min=1) * present).sum() / present.sum().clamp(min=1)
    fluid = 1 - probabilities[:, 0]
    truth = (labels > 0).float()
    dice = (2 * (fluid * truth).sum() + eps) / (fluid.sum() + truth.sum() + eps)
    return 0.5 * (cross_entropy + 1 - dice)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tile", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rates = [0.25, 0.25, 0.5][-(args.depth - 1):]
    model = UNet(args.base, args.depth, args.classes, rates)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-7)
    x = torch.randn(args.batch, 3, args.height, args.width)
    with torch.no_grad():
        out_shape = model(x).shape
    labels = torch.randint(0, args.classes, (args.batch, out_shape[2], out_shape[3]))

    model.train()
    step_ms = []
    for step in range(args.warmup + args.steps):
        started = time.perf_counter()
        optimizer.zero_grad()
        loss = segmentation_loss(model(x), labels)
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            step_ms.append((time.perf_counter() - started) * 1000)

    model.eval()
    inference_ms = []
    with torch.no_grad():
        for step in range(1 + args.steps):
            started = time.perf_counter()
            torch.softmax(model(x), 1)
            if step >= 1:
                inference_ms.append((time.perf_counter() - started) * 1000)

    result = {
        "torch": torch.__version__,
        "threads": args.threads,
        "output": [int(out_shape[2]), int(out_shape[3])],
        "step_ms": statistics.median(step_ms),
        "inference_batch_ms": statistics.median(inference_ms),
        "steps_timed": args.steps,
    }
    if args.tile > 0:
        tile = torch.randn(1, 3, args.tile, args.tile)
        tile_ms = []
        with torch.no_grad():
            for step in range(1 + min(args.steps, 3)):
                started = time.perf_counter()
                torch.softmax(model(tile), 1)
                if step >= 1:
                    tile_ms.append((time.perf_counter() - started) * 1000)
        result["tile"] = args.tile
        result["tile_ms"] = statistics.median(tile_ms)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
