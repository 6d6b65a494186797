"""`tunekit bench`: what does this machine do with these backbones? (No Ray: runs wherever torch and timm do.)

For each model, at one batch size, image size and precision on one device:

* ceiling: the loop's own train step (``device.Amp.step``: forward, loss, backward, AdamW step) of
  the same network tunekit trains (timm body + pool + head) on random tensors, as timm's
  benchmark.py measures it (50 steps after 5 of warm-up);
* loop: tunekit's own training epochs (``loop.fit``) on real cached images (the built-in shapes
  data, generated at the benchmark's image size; the faster of two epochs), and loop / ceiling.
  Ceiling and loop runs alternate (``rounds`` of each) and each keeps its best;
* data: the input path alone on one core, images/s, on photo-like 500x375 JPEGs: the decode-once
  cache (``Batches``) against decoding and resizing each JPEG with PIL per item (the usual
  DataLoader way).

A trial's start under Ray is measured where searches live (``tuner.trial_start``).

    records = bench(["test_resnet", "test_vit"], device="cpu", img_size=64)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import data as tkdata
from .config import TrialConfig
from .device import (
    Amp,
    channels_last,
    device_name,
    machine_id,
    random_steps,
    resolve_device,
    resolve_precision,
    synchronize,
    trial_backend,
)
from .loop import fit
from .model import build_model


@dataclass
class BenchRecord:
    model: str
    device: str
    batch_size: int
    img_size: int
    precision: str
    ceiling_images_per_s: float
    loop_images_per_s: float
    loop_ratio: float
    peak_mem_gib: float
    data_cache_images_per_s_per_core: float
    data_pil_images_per_s_per_core: float
    packing: list[dict] | None = None  # 1, 2, 4 trials sharing the device (first model only)
    # --compile: the ceiling and the loop through torch.compile, the compile's seconds (first step less a
    # steady one; a warm cache makes it small); loop_ratio is then against the faster of the two ceilings
    compiled_images_per_s: float | None = None
    loop_compiled_images_per_s: float | None = None
    compile_s: float | None = None
    trial_start_s: float | None = None  # a free trial slot -> the trial's first training step (median)

    def as_dict(self) -> dict:
        return asdict(self)


def ceiling(model_name: str, device: torch.device, batch_size: int, img_size: int, precision: str,
            n_classes: int = 6, warmup: int = 5, steps: int = 50, compiled: bool = False,
            timings: dict | None = None) -> tuple[float, float]:
    """(images/s, peak GiB) of the loop's train step on random tensors (``device.random_steps``)."""
    return random_steps(model_name, device, batch_size, img_size, precision, n_classes, warmup, steps,
                        compiled=compiled, timings=timings)


def loop(model_name: str, device: torch.device, batch_size: int, img_size: int, precision: str,
         n_images: int, epochs: int = 2, threads: int | None = None, compile: str = "off") -> float:
    """Training images/s of tunekit's own loop (best epoch; the first one includes warm-up)."""
    cfg = TrialConfig(data=f"shapes?n={n_images}&size={img_size}", model=model_name, pretrained=False,
                      epochs=epochs, batch_size=batch_size, img_size=img_size, precision=precision,
                      device=str(device), threads=threads, compile=compile)
    result = fit(cfg)
    return max(h["images_per_s"] for h in result.history)


def data_paths(img_size: int, batch_size: int, device: torch.device, n_photos: int = 600,
               resize: str = "crop") -> tuple[float, float]:
    """(cache, PIL) images/s on one core, on photo-like JPEGs (500x375, like Pets'): a training
    epoch of cached batches (the host's share: uint8 crops when training on a GPU, which then
    converts to float; the float conversion too on a CPU), against per-item decoding."""
    root = photo_like_folder(n_photos)
    ds = tkdata.load(f"folder:{root}", resize, img_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batches = ds.batches("train", batch_size=batch_size, device=torch.device("cpu"), mean=(0.5,) * 3,
                             std=(0.25,) * 3)
        produce = batches.epoch if device.type == "cpu" else batches.pixel_epoch
        cache_rate = max(_rate(produce, epoch) for epoch in (1, 2, 3))
        files = [ds.items.files[i] for i in ds.train_index[: min(300, len(ds.train_index))]]
        start = time.perf_counter()
        for f in files:
            _pil_item(f, img_size)
        pil_rate = len(files) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return cache_rate, pil_rate


def _rate(produce, epoch: int) -> float:
    start, seen = time.perf_counter(), 0
    for x, _ in produce(epoch):
        seen += len(x)
    return seen / (time.perf_counter() - start)


def photo_like_folder(n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """``n`` JPEGs (quality 90) with a photo's detail (smooth shapes, edges, sensor noise), in two
    class folders under the data root, made once. Generated ``shapes`` images decode several times
    faster than photos, which would flatter the per-item baseline."""
    root = tkdata.data_root() / "bench" / f"photos-n{n}-{size[0]}x{size[1]}-seed{seed}"
    if (root / ".done").is_file():
        return root
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        mid = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = 0.6 * np.asarray(coarse, dtype=np.float32) + 0.4 * np.asarray(mid, dtype=np.float32)
        pixels += rng.normal(0, 6, pixels.shape)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    (root / ".done").touch()
    return root


def _pil_item(path: Path, size: int) -> torch.Tensor:
    """What a per-item Dataset does: decode, resize the short side, random crop, flip, normalize."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    left = np.random.randint(0, img.width - size + 1)
    top = np.random.randint(0, img.height - size + 1)
    img = img.crop((left, top, left + size, top + size))
    if np.random.rand() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255)
    return (x - 0.5) / 0.25


def bench(models: list[str], device: str = "auto", batch_size: int = 64, img_size: int = 64,
          precision: str = "auto", n_images: int = 4500, threads: int | None = None,
          pack: list[int] | None = None, rounds: int = 2, compile: bool = False,
          echo=print) -> list[BenchRecord]:
    dev = resolve_device(device)
    trial_backend(dev)  # cuDNN's autotuner, as trials train
    prec = resolve_precision(precision, dev)
    if threads:
        torch.set_num_threads(threads)
    echo(f"# {device_name(dev)}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
         f"batch {batch_size}, {img_size}px, {prec}")
    cache_rate, pil_rate = data_paths(img_size, batch_size, dev)
    host = "uint8 crops, float on the device" if dev.type != "cpu" else "incl. float conversion"
    echo(f"data path, 1 core, 500x375 JPEGs: decode-once cache {cache_rate:.0f} images/s ({host}), "
         f"per-item PIL {pil_rate:.0f} images/s ({cache_rate / pil_rate:.1f}x)")
    echo(f"{'model':24s}{'ceiling img/s':>14s}{'loop img/s':>12s}{'loop/ceiling':>14s}{'peak GiB':>10s}")
    records = []
    for name in models:
        # Ceiling and loop runs alternate and each keeps its best: measured one after the other, the
        # machine's speed drifting in between (a shared VM) moved loop/ceiling by up to 25%. Every
        # ceiling run measures the same peak memory.
        ceil_rate = loop_rate = 0.0
        for _ in range(rounds):
            rate, peak = ceiling(name, dev, batch_size, img_size, prec)
            ceil_rate = max(ceil_rate, rate)
            loop_rate = max(loop_rate, loop(name, dev, batch_size, img_size, prec, n_images, threads=threads))
        record = BenchRecord(name, str(dev), batch_size, img_size, prec, ceil_rate, loop_rate,
                             loop_rate / ceil_rate, peak, cache_rate, pil_rate)
        echo(f"{name:24s}{ceil_rate:14.0f}{loop_rate:12.0f}{record.loop_ratio:14.2f}{peak:10.2f}")
        if compile:
            compiled_step(record, dev, n_images, threads, rounds, echo)
        records.append(record)
    if pack and records:
        records[0].packing = packing(models[0], pack, str(dev), batch_size, img_size, prec, n_images, echo)
    return records


def compiled_step(record: BenchRecord, device: torch.device, n_images: int, threads: int | None, rounds: int,
                  echo) -> None:
    """``record``'s network through torch.compile: the compiled ceiling, the compile time, the loop compiled;
    the bare steps and the compile go to the machine's book (``machine.Book``: ``bench_train_s``,
    ``bench_compile_s``, ``bench_cache``), beside the measurement stage's, which ``compile=auto`` decides by."""
    from dataclasses import replace

    from .compiled import cache_misses
    from .machine import Book, StepKey

    r = record
    timings: dict = {}
    misses = cache_misses()
    rate, _ = ceiling(r.model, device, r.batch_size, r.img_size, r.precision, compiled=True, timings=timings)
    compile_s = max(0.0, timings["first_step_s"] - r.batch_size / rate)
    cache = "cold" if cache_misses() > misses else "warm"
    loop_rate = 0.0
    for _ in range(rounds):
        rate = max(rate, ceiling(r.model, device, r.batch_size, r.img_size, r.precision, compiled=True)[0])
        loop_rate = max(loop_rate, loop(r.model, device, r.batch_size, r.img_size, r.precision, n_images,
                                        threads=threads, compile="on"))
    r.compiled_images_per_s, r.loop_compiled_images_per_s, r.compile_s = rate, loop_rate, compile_s
    r.loop_ratio = max(r.loop_images_per_s, loop_rate) / max(r.ceiling_images_per_s, rate)
    # beside the measurement stage's figures, which compile=auto decides by: bench's first compile is one graph
    # (the unfrozen train step), with bench's own head and no eval
    book, key = Book(machine_id(device)), StepKey(r.model, r.batch_size, r.img_size, r.precision)
    book.record(key, by="bench", bench_train_s=1 / r.ceiling_images_per_s)
    book.record(replace(key, compile=True), by="bench", bench_train_s=1 / rate, bench_compile_s=compile_s,
                bench_cache=cache)
    echo(f"{'  compiled':24s}{rate:14.0f}{loop_rate:12.0f}{loop_rate / rate:14.2f}   compile {compile_s:.0f}s "
         f"({cache} cache; {rate / r.ceiling_images_per_s:.2f}x eager); loop / fastest step {r.loop_ratio:.2f}")


def inference_ceiling(model_name: str, device: torch.device, batch_size: int, img_size: int, precision: str,
                      n_classes: int = 6, warmup: int = 3, steps: int = 10) -> float:
    """Images/s of the bare forward pass (validation, and the floor of a frozen-body epoch)."""
    torch.manual_seed(0)
    cfg = TrialConfig(model=model_name, pretrained=False, img_size=img_size, batch_size=batch_size)
    model, _ = build_model(cfg, n_classes, img_size)
    nhwc = channels_last(device, model.layout)
    model.to(device, memory_format=torch.channels_last if nhwc else torch.preserve_format).eval()
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    with torch.inference_mode(), Amp.create(precision, device).autocast():
        for i in range(warmup + steps):
            if i == warmup:
                synchronize(device)
                start = time.perf_counter()
            model(x)
        synchronize(device)
    return batch_size * steps / (time.perf_counter() - start)


def packing(model_name: str, counts: list[int], device: str, batch_size: int, img_size: int, precision: str,
            n_images: int, echo=print) -> list[dict]:
    """Aggregate training images/s of 1, 2, 4... concurrent trials (processes) sharing one device,
    and each one's peak memory: what packing several small trials on a GPU buys. As a search packs
    them: each worker keeps to 1/k of the GPU's memory (``gpu_share.limit_memory``, which also decides
    whether its images stay on the GPU), and this process gives back the memory its own runs cached."""
    import gc
    import multiprocessing as mp
    import os

    ctx = mp.get_context("spawn")
    tkdata.load(f"shapes?n={n_images}&size={img_size}", "crop", img_size)  # made once, before the workers
    gc.collect()
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    rows = []
    for k in counts:
        threads = max(1, (os.cpu_count() or 1) // k)
        with ctx.Manager() as manager:
            barrier = manager.Barrier(k)
            args = (model_name, device, batch_size, img_size, precision, n_images, threads, barrier, 1 / k)
            with ctx.Pool(k) as pool:
                results = pool.starmap(_pack_worker, [args] * k)
        rows.append({"trials": k, "images_per_s": sum(r[0] for r in results),
                     "peak_mem_gib": max(r[1] for r in results)})
        base = rows[0]["images_per_s"]
        echo(f"packing {k} x {model_name}: {rows[-1]['images_per_s']:.0f} images/s together "
             f"({rows[-1]['images_per_s'] / base:.2f}x one), peak {rows[-1]['peak_mem_gib']:.2f} GiB each")
    return rows


def _pack_worker(model_name, device, batch_size, img_size, precision, n_images, threads, barrier, share) -> tuple:
    from . import _compat  # noqa: F401 - a spawned process imports timm through tunekit
    from .gpu_share import limit_memory

    limit_memory(resolve_device(device), share)  # as a trial at this share of the GPU does
    cfg = TrialConfig(data=f"shapes?n={n_images}&size={img_size}", model=model_name, pretrained=False,
                      epochs=3, batch_size=batch_size, img_size=img_size, precision=precision, device=device,
                      threads=threads)
    result = fit(cfg, on_setup=lambda info: barrier.wait())  # all start training together
    return max(h["images_per_s"] for h in result.history[1:]), max(h["gpu_mem"] for h in result.history)
