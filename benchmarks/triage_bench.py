"""Triage throughput: images/s single-process and under torchrun, and a kill-and-resume check.

Builds the demo folder (the 7 labelled sample images + mirror images, 14 images) and a folder of
56 images (the same with all 8 augmentations of ``faccent_widget.triage.demo.AUGMENTATIONS``), then
triages each with the CLI (the ``--demo`` settings unless given) in 1 process and with
``torchrun --nproc_per_node 2`` (gloo on CPU). Reports, per run: the triage's own time (from
``index.json``: after the model is loaded, up to the merged index), the whole command's wall time,
images/s and mistakes accentuated/s. Then kills a run after its first finished mistake and resumes it.

    python benchmarks/triage_bench.py                 # demo + 56 images, 1 and 2 processes, resume
    python benchmarks/triage_bench.py --sets demo --procs 1
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faccent_widget.triage import build_demo_folder
from faccent_widget.triage.cli import DEMO_SETTINGS

ROOT = Path(__file__).resolve().parents[1]


def _settings_args(args: argparse.Namespace) -> list[str]:
    s = {**DEMO_SETTINGS, **{k: v for k, v in (("steps", args.steps),) if v is not None}}
    return [
        "--preset",
        s["preset"],
        "--steps",
        str(s["steps"]),
        "--crops",
        str(s["n_crops"]),
        "--canvas",
        str(s["canvas"]),
        "--input-size",
        str(s["input_size"]),
        "--quiet",
    ]


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run(folder: Path, out: Path, procs: int, args: argparse.Namespace) -> dict:
    cli = ["-m", "faccent_widget", "triage", str(folder), "--out", str(out), *_settings_args(args)]
    if procs == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *cli]
    threads = max(1, (os.cpu_count() or 1) // procs)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    index = json.loads((out / "index.json").read_text())
    last = index["runs"][-1]
    n = index["summary"]["items"]
    return {
        "images": n,
        "mistakes": index["summary"]["mistakes"],
        "procs": procs,
        "threads_per_proc": threads,
        "triage_s": round(last["seconds"], 1),
        "wall_s": round(wall, 1),
        "images_per_s": round(n / last["seconds"], 3),
        "mistakes_per_s": round(index["summary"]["mistakes"] / last["seconds"], 3),
        "images_per_s_wall": round(n / wall, 3),
    }


def resume_check(folder: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "faccent_widget",
        "triage",
        str(folder),
        "--out",
        str(out),
        *_settings_args(args),
        "--batch-size",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=_env(os.cpu_count() or 1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    items = out / "items"
    while proc.poll() is None:
        if items.is_dir() and any(not d.name.startswith(".") for d in items.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {d.name: (d / "row.json").stat().st_mtime_ns for d in items.iterdir() if not d.name.startswith(".")}
    temporaries = [d.name for d in items.iterdir() if d.name.startswith(".")]
    subprocess.run(cmd, env=_env(os.cpu_count() or 1), check=True, capture_output=True)
    index = json.loads((out / "index.json").read_text())
    after = {d.name: (d / "row.json").stat().st_mtime_ns for d in items.iterdir()}
    unchanged = all(after.get(k) == v for k, v in before.items())
    listed = [r["index"] for r in index["items"]]
    return {
        "killed_after": len(before),
        "temporaries_left_by_kill": len(temporaries),
        "mistakes": index["summary"]["mistakes"],
        "items_after_resume": len(after),
        "distinct_in_index": len(set(listed)),
        "duplicates": len(listed) - len(set(listed)),
        "finished_items_unchanged": unchanged,
        "recomputed_by_resume": index["runs"][-1]["accentuated"],
        "predicted_again_by_resume": index["runs"][-1]["predicted"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["demo", "aug56"], choices=["demo", "aug56"])
    p.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    p.add_argument("--steps", type=int, default=None, help="override the demo's step count")
    p.add_argument("--no-resume", action="store_true")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {
            "demo": build_demo_folder(Path(tmp) / "demo", variants=2),
            "aug56": build_demo_folder(Path(tmp) / "aug56", variants=8),
        }
        for name in args.sets:
            for procs in args.procs:
                r = {"set": name, **run(folders[name], Path(tmp) / f"out-{name}-{procs}", procs, args)}
                results.append(r)
                print(json.dumps(r), flush=True)
        if not args.no_resume:
            r = {"set": "demo", "resume": resume_check(folders["demo"], Path(tmp) / "out-resume", args)}
            results.append(r)
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
