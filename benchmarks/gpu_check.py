"""The GPU acceptance run: every GPU path of tunekit, one command, a few minutes, offline.

Each step is the command a user runs, in its own process with its own time limit (one failure or
hang does not hide the rest), its output kept in OUT/<step>.log:

  doctor      tunekit doctor
  train_cnn   tunekit train resnet18 (from scratch, generated 224 px data, bf16 where the GPU has it)
  train_vit   tunekit train vit_small_patch16_224
  search      tunekit search: 12 trials (4 backbones x 3 lr), gpus_per_trial="auto", ASHA
  bench       tunekit bench resnet18, convnext_tiny, vit_small_patch16_224 (loop / ceiling), packing 1/2/4,
              eager and compiled steps and the compile time (--compile; GPU only: the CPU's is tests/test_compiled.py)
  sweep       benchmarks/gpu_sweep.py: a 12-trial study-shaped search against the bare sequential loop
  study_fit   benchmarks/study_fit.py: the study's convnext_tiny fit against the bare steps
  rank        tunekit rank (LogME, random weights: offline)
  export      tunekit export the search's best trial
  predict     tunekit predict on generated images, on the device
  evaluate    tunekit evaluate the exported model on its own validation split

A table at the end, and one JSON (OUT/gpu_check.json) with every step's status, time and figures.
``--device cpu`` runs the same steps at tiny sizes (the test suite runs it).

    python benchmarks/gpu_check.py --out /tmp/gpu_check-$(date +%s)            # on a GPU machine
    python benchmarks/gpu_check.py --wheels .whl --out /tmp/gc1               # a bare image: torch, timm, no Ray
    python benchmarks/gpu_check.py --device cpu --out /tmp/gc --jobs 2        # anywhere, about 80 s on 2 cores

``--wheels DIR`` installs the wheels there (``tools/device_wheels.sh`` in the shared tools builds Ray,
Optuna and plotly for such an image) into a folder of their own (``OUT/site``) when Ray cannot be
imported, and every step runs with it and this checkout on its Python path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

# Sizes per device: the GPU run is the acceptance; the CPU run checks the same steps in the suite.
SIZES = {
    "cuda": {"models": ["resnet18", "convnext_tiny", "vit_small_patch16_224", "efficientnet_b0"],
             "cnn": "resnet18", "vit": "vit_small_patch16_224", "size": 224, "n": 2000, "batch": 64,
             "bench": ["resnet18", "convnext_tiny", "vit_small_patch16_224"], "pack": "1,2,4",
             "study": ["--model", "convnext_tiny"], "gpus_per_trial": '"auto"', "epochs": 3, "rank_images": 500,
             "lrs": [0.001, 0.003, 0.01], "rounds": 2},
    "cpu": {"models": ["test_resnet", "test_vit"], "cnn": "test_resnet", "vit": "test_vit", "size": 32,
            "n": 120, "batch": 32, "bench": ["test_resnet"], "pack": "1,2",
            "study": ["--model", "test_convnext", "--n", "150", "--img-size", "32", "--batch-size", "32"],
            "gpus_per_trial": "0", "epochs": 2, "rank_images": 60, "lrs": [0.003, 0.01], "rounds": 1},
}
# Each step's limit in seconds (GPU; the CPU run's are scaled by CPU_SLOWER): their sum is the run's bound
LIMITS = {"doctor": 60, "train_cnn": 60, "train_vit": 60, "search": 180, "bench": 240, "study_fit": 90, "rank": 60,
          "sweep": 300, "export": 40, "predict": 40, "evaluate": 40}
CPU_SLOWER = 2


@dataclass
class Step:
    name: str
    status: str = "not run"  # ok, failed (exit code N), timed out, skipped (why)
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    log: str = ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (tiny sizes)")
    p.add_argument("--out", type=Path, required=True, help="a new folder: logs, run folders, data, gpu_check.json")
    p.add_argument("--wheels", type=Path, help="wheels to install where Ray is missing (a bare GPU image)")
    p.add_argument("--only", help="comma-separated steps to run (default: all)")
    p.add_argument("--jobs", type=int, choices=(1, 2), default=1,
                   help="2: the search and its export/predict/evaluate beside the other steps (quicker; their "
                        "timings then share the machine: keep 1 for figures)")
    args = p.parse_args()
    if args.wheels is not None and not args.wheels.is_dir():
        print(f"error: --wheels {args.wheels}: no such folder", file=sys.stderr)
        return 2
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = environment(out, args.wheels)
    kind = "cpu" if args.device == "cpu" else "cuda"
    only = set(args.only.split(",")) if args.only else None
    if kind == "cpu":  # nothing to refuse: the machine's description is read beside the steps
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            probe = pool.submit(machine, env)
            steps = run_all(kind, args.device, out, env, only, args.jobs)
            found = probe.result()
    else:
        found = machine(env)
        if not found.get("gpu"):  # one clear line, before ten steps fail the same way
            print(f"error: no CUDA GPU here (torch {found.get('torch', '?')}): run it with --device cpu for the CPU "
                  f"mode", file=sys.stderr)
            return 2
        steps = run_all(kind, args.device, out, env, only, args.jobs)
    record = {"device": args.device, "machine": found, "steps": [asdict(s) for s in steps]}
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2, default=str))
    print(table(steps, record["machine"]))
    print(f"wrote {out / 'gpu_check.json'}")
    return 0 if all(s.status == "ok" or s.status.startswith("skipped") for s in steps) else 1


def environment(out: Path, wheels: Path | None) -> dict[str, str]:
    """The steps' environment: this checkout (and the wheels' folder) on the path, data under OUT unless
    TUNEKIT_DATA says where (the suite shares its generated data and photo-like JPEGs with the run)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TUNEKIT_DATA", str(out / "data"))
    paths = [str(ROOT)]
    if wheels is not None and subprocess.run([sys.executable, "-c", "import ray, optuna, plotly"],
                                             capture_output=True).returncode != 0:
        site = out / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))], check=True)
        paths.insert(0, str(site))
        env["PATH"] = f"{site / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(paths + [env["PYTHONPATH"]] if env.get("PYTHONPATH") else paths)
    return env


def machine(env: dict[str, str]) -> dict:
    code = ("import tunekit, json, platform, torch, timm; d = torch.cuda.is_available(); print(json.dumps({"
            "'gpu': torch.cuda.get_device_name(0) if d else None, 'gpus': torch.cuda.device_count(), "
            "'capability': list(torch.cuda.get_device_capability(0)) if d else None, 'torch': torch.__version__, "
            "'cuda': torch.version.cuda, 'timm': timm.__version__, 'python': platform.python_version(), "
            "'cpus': __import__('os').cpu_count()}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()[-300:]}


def run_all(kind: str, device: str, out: Path, env: dict[str, str], only: set[str] | None,
            jobs: int = 1) -> list[Step]:
    s = SIZES[kind]
    if kind == "cpu" and jobs > 1:  # two lanes: half the cores' threads each (more would contend, spinning, for them)
        env = {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
    data = f"shapes?n={s['n']}&size={s['size']}"
    tk = [sys.executable, "-m", "tunekit.cli"]
    common = ["--device", device, "--batch-size", str(s["batch"]), "--img-size", str(s["size"])]
    space = write_space(out, kind, data)
    runs = out / "runs"
    images = out / "images"
    model = out / "model"
    plan = {
        "doctor": tk + ["doctor"],
        "train_cnn": tk + ["train", "--data", data, "--model", s["cnn"], "--no-pretrained", "--epochs", "2",
                           "--json", *common],
        "train_vit": tk + ["train", "--data", data, "--model", s["vit"], "--no-pretrained", "--epochs", "2",
                           "--json", *common],
        "search": tk + ["search", str(space), "--storage-path", str(runs), "--progress", "events"],
        "bench": tk + ["bench", "--models", ",".join(s["bench"]), "--device", device, "--img-size", str(s["size"]),
                       "--n-images", str(s["n"]), "--pack", s["pack"], "--rounds", str(s["rounds"]),
                       "--json", str(out / "bench.json"), *(["--compile"] if kind == "cuda" else [])],
        "study_fit": [sys.executable, str(ROOT / "benchmarks" / "study_fit.py"), *s["study"], "--device", device,
                      "--json", str(out / "study_fit.json")],
        "sweep": [sys.executable, str(ROOT / "benchmarks" / "gpu_sweep.py"), "--device", kind, "--out",
                  str(out / "sweep")],
        "rank": tk + ["rank", data, "--models", ",".join(s["models"]), "--method", "logme", "--no-pretrained",
                      "--device", device, "--max-images", str(s["rank_images"]), "--json"],
        "export": tk + ["export", str(runs / "gpu_check"), str(model)],
        "predict": [*tk, "data", "shapes", str(images), "--n", "40", "--size", str(s["size"]), "--seed", "9"],
        "evaluate": tk + ["evaluate", str(model), "--data", data, "--split", "valid", "--device", device],
    }
    steps = {name: Step(name) for name in plan}

    def lane(names: list[str]) -> None:
        for name in names:
            run_step(steps[name], plan[name], kind, device, out, env, only, tk)

    # the search and what uses its run folder, one after the other, then three steps of the rest so the two lanes
    # take about as long (the CPU mode's step times, a thread per lane: search 33 s, export/predict/evaluate 14,
    # train_vit 4, study_fit 9, train_cnn 7 against doctor 3, bench 31, sweep 32, rank 5); the rest beside them
    # (--jobs 2)
    chain = ["search", "export", "predict", "evaluate", "train_vit", "study_fit", "train_cnn"]
    rest = [name for name in plan if name not in chain]
    if jobs > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(lane, rest), pool.submit(lane, chain)]:
                future.result()
    else:
        lane(list(plan))
    return [steps[name] for name in plan]


def run_step(step: Step, argv: list[str], kind: str, device: str, out: Path, env: dict[str, str],
             only: set[str] | None, tk: list[str]) -> None:
    model = out / "model"
    if only is not None and step.name not in only:
        step.status = "skipped (--only)"
        return
    if step.name in ("predict", "evaluate") and not (model / "tunekit_model.json").is_file():
        step.status = "skipped (no exported model)"
        return
    limit = LIMITS[step.name] * (CPU_SLOWER if kind == "cpu" else 1)
    if step.name == "predict":  # images to label first, then the prediction itself
        if not run(Step("images"), argv, limit, env, out).status == "ok":
            step.status = "failed (could not write images)"
            return
        argv = tk + ["predict", str(model), str(out / "images"), "--device", device, "--top", "2",
                     "--csv", str(out / "predictions.csv")]
    run(step, argv, limit, env, out)
    if step.status == "ok":
        try:
            step.figures = FIGURES[step.name](step.log, out)
        except Exception as e:  # noqa: BLE001 - a step that ran but left no figures is a failed check
            step.status = f"failed (no figures: {type(e).__name__}: {e})"


def write_space(out: Path, kind: str, data: str) -> Path:
    s = SIZES[kind]
    space = out / "gpu_check.py"
    space.write_text(textwrap.dedent(f"""\
        from ray import tune
        data = {data!r}
        epochs = {s['epochs']}
        searcher = "grid"
        asha = {{"grace_period": 1, "reduction_factor": 3}}
        gpus_per_trial = {s['gpus_per_trial']}
        max_failures = 0
        keep_best = 1
        space = {{"model": tune.grid_search({s['models']!r}), "lr": tune.grid_search({s['lrs']!r}),
                  "pretrained": False, "batch_size": {s['batch']}, "img_size": {s['size']}}}
    """))
    return space


def run(step: Step, argv: list[str], limit: float, env: dict[str, str], out: Path) -> Step:
    print(f"[{step.name}] {' '.join(argv[1:])}  (limit {limit:.0f} s)", flush=True)
    log = out / f"{step.name}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        # a session of its own: a timeout ends the step's children too (Ray's workers, pack workers)
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=out, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
            step.status = "ok" if code == 0 else f"failed (exit code {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            step.status = f"timed out after {limit:.0f} s"
    step.seconds = round(time.perf_counter() - start, 1)
    step.log = log.read_text(errors="replace")
    print(f"[{step.name}] {step.status} in {step.seconds:.0f} s", flush=True)
    return step


# ---- each step's figures, read from what it wrote -------------------------------------------------------

def _train(log: str, out: Path) -> dict:
    epochs = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    device, precision = re.search(r" on (\S+) \((\w+)\): ", log).groups()
    last = epochs[-1]
    return {"device": device, "precision": precision, "epochs": len(epochs), "error_rate": last["error_rate"],
            "images_per_s": round(max(e["images_per_s"] for e in epochs), 1), "gpu_mem_gib": round(last["gpu_mem"], 3),
            "fit_time_s": round(last["fit_time"], 2)}


def _search(log: str, out: Path) -> dict:
    run_dir = out / "runs" / "gpu_check"
    results = pd.read_csv(run_dir / "results.csv")
    infos = [json.loads((Path(p) / "tunekit_run.json").read_text()) for p in results["path"]
             if (Path(p) / "tunekit_run.json").is_file()]
    statuses = results["status"].str.split(" ").str[0].value_counts().to_dict()
    if statuses.get("errored"):
        raise RuntimeError(f"{statuses['errored']} trial(s) errored: {results['error'].dropna().iloc[0]}")
    wall = re.search(r"search ended after (\d+)s", log)
    start = re.search(r"trial start: median ([\d.]+)s \(min ([\d.]+)s, max ([\d.]+)s\)", log)
    phases = re.search(r"trial start phases, median s over \d+: (.+)", log)
    shares = re.findall(r"gpu share (.+?): peak ([\d.]+) GiB, room for [\d.]+ GiB -> (\S+) GPU", log)
    return {"trials": len(results), "statuses": statuses, "devices": sorted({i["device"] for i in infos}),
            "search_s": int(wall.group(1)) if wall else None,
            "trial_start_median_s": float(start.group(1)) if start else None,
            "trial_start_max_s": float(start.group(3)) if start else None,
            "start_phases": {k.replace(" ", "_"): float(v)
                             for k, v in (part.rsplit(" ", 1) for part in phases.group(1).split(", "))}
            if phases else None,
            "best_error_rate": float(results["error_rate"].min()),
            "shares": {key: {"peak_gib": float(peak), "share": share} for key, peak, share in shares}}


def _bench(log: str, out: Path) -> dict:
    records = json.loads((out / "bench.json").read_text())
    figures = {r["model"]: {"ceiling": round(r["ceiling_images_per_s"]), "loop": round(r["loop_images_per_s"]),
                            "loop_over_ceiling": round(r["loop_ratio"], 3), "peak_gib": round(r["peak_mem_gib"], 2),
                            **({"compiled": round(r["compiled_images_per_s"]),
                                "loop_compiled": round(r["loop_compiled_images_per_s"]),
                                "compile_s": round(r["compile_s"], 1)} if r.get("compile_s") is not None else {})}
               for r in records}
    packing = records[0].get("packing") or []
    if packing:
        base = packing[0]["images_per_s"]
        figures["packing"] = {str(r["trials"]): {"images_per_s": round(r["images_per_s"]),
                                                 "speedup": round(r["images_per_s"] / base, 2)} for r in packing}
    return figures


def _sweep(log: str, out: Path) -> dict:
    record = json.loads((out / "sweep" / "gpu_sweep.json").read_text())
    return {k: round(record[k], 2) if isinstance(record[k], float) else record[k]
            for k in ("trials", "pretrained", "tunekit_s", "bare_sum_s", "ratio")}


def _study_fit(log: str, out: Path) -> dict:
    return json.loads((out / "study_fit.json").read_text())


def _rank(log: str, out: Path) -> dict:
    rows = json.loads(log[log.index("["):])  # tunekit rank --json: the measurements of a scoring under "extra"
    return {r["model"]: {"logme": round(r["logme"], 4), "images_per_s": round(r["extra"]["images_per_s"], 1),
                         "peak_gib": round(r["extra"]["peak_mem_gib"], 3)} for r in rows if r["logme"] is not None}


def _export(log: str, out: Path) -> dict:
    manifest = json.loads((out / "model" / "tunekit_model.json").read_text())
    return {"model": manifest["model"], "precision": manifest.get("precision"),
            "trained_on": manifest.get("trained_on")}


def _predict(log: str, out: Path) -> dict:
    rows = pd.read_csv(out / "predictions.csv")
    return {"images": len(rows), "mean_probability": round(float(rows["probability"].mean()), 3)}


def _evaluate(log: str, out: Path) -> dict:
    return json.loads((out / "model" / "evaluation" / "metrics.json").read_text())


FIGURES = {"doctor": lambda log, out: {"lines": [line for line in log.splitlines() if line.strip()][-12:]},
           "train_cnn": _train, "train_vit": _train, "search": _search, "bench": _bench, "study_fit": _study_fit,
           "sweep": _sweep,
           "rank": _rank, "export": _export, "predict": _predict, "evaluate": _evaluate}


def table(steps: list[Step], machine: dict) -> str:
    lines = [f"gpu_check on {machine.get('gpu') or 'CPU'} (torch {machine.get('torch')}, timm {machine.get('timm')})",
             f"{'step':10s} {'status':28s} {'seconds':>7s}  figures"]
    for s in steps:
        shown = json.dumps(s.figures, default=str)
        lines.append(f"{s.name:10s} {s.status[:28]:28s} {s.seconds:7.0f}  {shown[:160]}")
    ok = sum(s.status == "ok" for s in steps)
    lines.append(f"{ok} of {len(steps)} steps ok, {sum(s.seconds for s in steps):.0f} s in all")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
