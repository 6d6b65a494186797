"""Batches for the training loop: cached uint8 images -> normalized float tensors on the device.

All per-epoch work runs as a handful of tensor ops on the training device: gather the
batch's rows from the cache, crop (random for training, centre for validation; ``crop``
resize only), random horizontal flip (training), convert and normalize with the
backbone's mean and std. On a GPU the whole uint8 split is copied to the device once when the
caller says it fits (``resident``: ``gpu_share.resident_on``), so an epoch moves no data over PCIe.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .cache import ImageCache

# On a CPU, uint8 -> normalized float runs in chunks of this many output bytes, which stay in the
# core's cache between the multiply and the add: 2x faster at 224px than the whole batch at once
# (benchmarks/RESULTS.md); at 64px a chunk holds ~20 images.
CPU_CHUNK_BYTES = 1 << 20


class Batches:
    """One split of a cached dataset, iterated per epoch as (x, y) on ``device``."""

    def __init__(
        self, cache: ImageCache, index: np.ndarray, targets: torch.Tensor, *, train: bool,
        batch_size: int, device: torch.device, mean: tuple[float, ...], std: tuple[float, ...],
        channels_last: bool = False, seed: int = 0, resident: bool = False,
    ) -> None:
        self.cache, self.train, self.batch_size, self.device = cache, train, batch_size, device
        self.index = np.asarray(index)
        self.size = cache.size
        self.seed = seed
        self.channels_last = channels_last
        self.targets = targets.to(device)
        self.extent = torch.as_tensor(cache.extent[self.index], dtype=torch.long)
        self.transposed = torch.as_tensor(cache.transposed[self.index])
        std_t = torch.tensor(std, dtype=torch.float32)
        # (x / 255 - mean) / std as one multiply-add.
        self.scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(1, 3, 1, 1).to(device)
        self.resident: torch.Tensor | None = None
        if resident and device.type != "cpu":  # the caller's decision: gpu_share.resident_on
            self.resident = torch.from_numpy(np.take(cache.images, self.index, axis=0)).to(device)

    @property
    def resident_bytes(self) -> int:
        """Bytes of images this split keeps on the device (0: read from the host every batch)."""
        return 0 if self.resident is None else self.resident.nbytes

    def __len__(self) -> int:
        """Batches per epoch (training drops the last partial batch, as fastai does)."""
        n = len(self.index)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    @property
    def n_items(self) -> int:
        return len(self.index)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch; training order and augmentation are seeded by (seed, epoch)."""
        for pos, on_device, gen in self._positions(epoch):
            yield self._batch(pos, on_device, gen), self.targets[on_device]

    def _positions(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Generator]]:
        """Each batch's positions in this split, on the host and on the device. The epoch's positions go
        to a GPU in one copy that does not wait (a copy per batch from pageable memory made the host wait
        for the previous step's kernels: no overlap of the next batch's preparation with the step)."""
        n = len(self.index)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen) if self.train else torch.arange(n)
        # Sorted positions read the memory map sequentially (``index`` is ascending); the order of
        # items within a batch does not change a training step.
        batches = [order[b * self.batch_size: (b + 1) * self.batch_size].sort().values for b in range(len(self))]
        if self.device.type == "cuda" and batches:
            flat = torch.cat(batches).pin_memory().to(self.device, non_blocking=True)
            on_device = list(flat.split([len(b) for b in batches]))
        else:
            on_device = batches
        for pos, dev in zip(batches, on_device):
            yield pos, dev, gen

    def pixel_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """As :meth:`epoch`, but the uint8 crops: the host's whole share when training on a GPU."""
        for pos, on_device, gen in self._positions(epoch):
            yield self.pixels(pos, gen, on_device), self.targets[on_device]

    def _batch(self, pos: torch.Tensor, on_device: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        pixels = self.pixels(pos, gen, on_device)
        if self.device.type != "cpu":
            # one float multiply-add on the training device: the host only ever moves uint8
            x = torch.addcmul(self.shift, pixels.float(), self.scale)
        else:
            x = torch.empty(pixels.shape, dtype=torch.float32)
            step = max(1, CPU_CHUNK_BYTES // (4 * pixels[0].numel()))
            for i in range(0, len(pixels), step):
                torch.mul(pixels[i:i + step], self.scale, out=x[i:i + step]).add_(self.shift)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def pixels(self, pos: torch.Tensor, gen: torch.Generator, on_device: torch.Tensor | None = None) -> torch.Tensor:
        """The uint8 NCHW crops of the items at ``pos`` (positions in this split; ``on_device``: the same
        on the device), on the device."""
        if self.resident is not None:
            raw = self.resident[pos.to(self.device) if on_device is None else on_device]
        else:
            # np.take copies the rows out of the read-only memory map into a fresh, writable array
            raw = torch.from_numpy(np.take(self.cache.images, self.index[pos.numpy()], axis=0))
            if self.device.type == "cuda":
                raw = raw.pin_memory().to(self.device, non_blocking=True)
            else:
                raw = raw.to(self.device)
        B, S = raw.shape[0], self.size
        if raw.shape[2] != S:  # crop: an S x S window along the stored width
            room = (self.extent[pos] - S).clamp(min=0)
            offsets = (torch.rand(B, generator=gen) * (room + 1).float()).long() if self.train else room // 2
        else:
            offsets = torch.zeros(B, dtype=torch.long)
        flips = (torch.rand(B, generator=gen) < 0.5) if self.train else torch.zeros(B, dtype=torch.bool)
        transposed = self.transposed[pos]
        if raw.device.type == "cuda":  # a few kernels for the batch, not one per flipped item
            return crops(raw, offsets, transposed, flips, S)
        return crops_per_item(raw, offsets, transposed, flips, S)


def crops_per_item(raw: torch.Tensor, offsets: torch.Tensor, transposed: torch.Tensor, flips: torch.Tensor,
                   size: int) -> torch.Tensor:
    """Per item: a view of its window (HWC), transposed back and/or flipped; one copy for all (on a CPU,
    cheaper than batch-wide ops that each write the whole batch)."""
    items = []
    for i, (o, t, f) in enumerate(zip(offsets.tolist(), transposed.tolist(), flips.tolist())):
        w = raw[i, :, o:o + size]
        if t:
            w = w.transpose(0, 1)
        if f:
            w = w.flip(1)
        items.append(w)
    # uint8 NHWC -> contiguous NCHW while still 1 byte per value (converting to float and
    # permuting at once was 1.5x slower on a CPU at 224px)
    return torch.stack(items).permute(0, 3, 1, 2).contiguous()


def crops(raw: torch.Tensor, offsets: torch.Tensor, transposed: torch.Tensor, flips: torch.Tensor,
          size: int) -> torch.Tensor:
    """:meth:`Batches.pixels`' crops as batch-wide ops (on a GPU: a handful of kernels whatever the batch
    size): item i's ``size``-wide window of its stored width from ``offsets[i]`` (a gather), transposed
    back where ``transposed``, flipped where ``flips``; uint8 NCHW. Equal to the per-item path."""
    B, device = raw.shape[0], raw.device
    cols = offsets.to(device)[:, None] + torch.arange(size, device=device)[None, :]  # (B, S)
    window = torch.gather(raw, 2, cols[:, None, :, None].expand(B, raw.shape[1], size, raw.shape[3]))
    if raw.shape[1] == size:  # square windows: transposing keeps the shape
        t = transposed.to(device)[:, None, None, None]
        window = torch.where(t, window.transpose(1, 2), window)
    f = flips.to(device)[:, None, None, None]
    window = torch.where(f, window.flip(2), window)
    return window.permute(0, 3, 1, 2).contiguous()
