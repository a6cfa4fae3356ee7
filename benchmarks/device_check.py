"""One-command check of the optimiser on a device (a GPU when one is at hand): prints a table, writes JSON.

    python benchmarks/device_check.py                        # the GPU (≤ 4 minutes on one card)
    python benchmarks/device_check.py --device cpu --quick   # the CI form: tiny settings, < 1 minute
    python benchmarks/device_check.py --presets preview paper --json out.json

Sections (each one is wrapped: a failure is recorded in the JSON and the table, and the script goes on):

* environment — device name, compute capability, torch / CUDA / cuDNN versions, the device policy chosen;
* sync        — ``torch.cuda.set_sync_debug_mode("error")`` around a run's steps (auto policy and forced
                fp16); on failure the lines that synchronise (from a second run in "warn" mode). On a CPU
                the same property is checked with a dispatch mode (no ``.item()``, no ``torch.tensor``);
* correctness — the same small fp32 run on the CPU and on the device, same seed and same augmentations,
                TF32 off: objective histories compared step by step (tolerance justified below);
* speed       — ms/step (median, synchronised, after warm-up; and pipelined), seconds per full
                accentuation, peak memory, per preset and model (default model and GoogLeNet), and ms/step
                of the GPU preset under fp32 / bf16 / fp16, with and without channels_last;
* fp16        — the T4 path forced on this card: gradients finite? objective gain vs bf16 and fp32;
                gradient fidelity at the seed vs fp32 with and without the gradient scale;
* widget      — ``FaccentWidget`` headless, driven by chunk messages as the browser does: chunks per
                second, steps per chunk;
* gallery     — top-5 as one batched run vs five single runs;
* graphs      — CUDA-graphed runs vs eager from the same seed (default model, batched top-k, forced fp16,
                plain layout, a ViT), replays under sync debug "error" (``_graph_sections.py``);
* floor       — the step's floor (the crops' forward+backward and the seed's forward, itself graphed on
                CUDA), ms/step eager and graphed, step/floor;
* triage      — a 64-image labelled folder triaged with the GPU preset: mistakes/s, peak memory.

Exit status 0 unless the script itself breaks; read the "ok" fields.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import faccent_widget as fw
from faccent_widget.core import step_graphs
from faccent_widget.core.device_policy import device_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _graph_sections  # noqa: E402 - the graph, floor and triage sections (issue 21), beside this script

#: Tiny settings for --quick (CI on a CPU): every section runs, the numbers mean little. Two steps: step 1
#: is where λ's balance is computed, so both kinds of step run.
QUICK = {"steps": 2, "n_crops": 2, "input_size": 64, "canvas": 64}

# Correctness tolerance (relative, per step of the objective history, CPU fp32 vs device fp32, TF32 off).
# Step 0 is pure forward numerics (the image has not moved), so the only differences are reduction
# orders in convolutions and the FFT: ~1e-7 relative measured (3.5e-7 on an H100), so 1e-4 catches any
# real bug. From step 1 on, the image has moved by Adam updates (H100: 1.9e-4 at step 1). Those compound round-off:
# its first updates are ≈ lr·sign(g), so gradient components near zero flip at random and the
# trajectories drift apart, growing ~3× per step: measured on a CPU, fp32 vs float64 reached 1e-3 by
# step 5 (1 vs 2 threads: 5e-4). 1e-2 over 6 steps leaves a 10× margin over that floor, while a real
# bug (wrong layout, dtype, normalisation, crops or noise) moves the objective by far more than 1 %.
EARLY_STEPS, EARLY_TOL, LATE_TOL, CORRECTNESS_STEPS = 1, 1e-4, 1e-2, 6


# ---------------------------------------------------------------------------------------------- helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def gpu_preset() -> str:
    """The preset the library picks on CUDA (the "GPU preset")."""
    try:
        from faccent_widget.core.config import default_preset

        return default_preset("cuda")
    except Exception:  # noqa: BLE001 - the config may move; any CUDA default will do
        return "paper" if "paper" in fw.PRESETS else next(iter(fw.PRESETS))


def load(name: str, device: torch.device) -> fw.Model:
    if name in ("default", "efficientnet_lite0"):
        return fw.load_model(device=device)
    return fw.load_model(name, pretrained=False, device=device)


def second_class(model: fw.Model, image: torch.Tensor) -> int:
    return model.predict(image, k=2)[1].index


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def log_prob_gain(result: fw.Accentuation) -> float | None:
    if result.score.prob is None or result.seed_score.prob is None:
        return None
    return math.log(max(result.score.prob, 1e-30)) - math.log(max(result.seed_score.prob, 1e-30))


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


_NoHostSync = step_graphs.HostSyncProbe  # no scalar read-backs, no tensors built from host data


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


# ---------------------------------------------------------------------------------------------- the check
class DeviceCheck:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.quick = bool(args.quick)
        self.small = dict(QUICK) if self.quick else {}
        self.gpu_preset_name = gpu_preset()
        self.presets = args.presets or list(dict.fromkeys(["preview", self.gpu_preset_name]))
        self.models = args.models or (["efficientnet_lite0"] if self.quick else ["efficientnet_lite0", "googlenet"])
        self.image = fw.sample_image("chelsea")
        self.report: dict[str, Any] = {"argv": sys.argv[1:], "quick": self.quick, "sections": {}}
        self.t0 = time.perf_counter()
        self._models: dict[str, fw.Model] = {}
        self.json_path = Path(args.json)

    def model(self, name: str = "efficientnet_lite0") -> fw.Model:
        if name not in self._models:
            self._models[name] = load(name, self.device)
        return self._models[name]

    def settings(self, preset: str, **extra: Any) -> dict[str, Any]:
        return {"preset": preset, "seed": 0, **self.small, **extra}

    # -------------------------------------------------------------------------------- section runner
    def section(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        elapsed = time.perf_counter() - self.t0
        if elapsed > self.args.time_limit:
            rec: dict[str, Any] = {"ok": False, "skipped": f"time limit ({self.args.time_limit:.0f} s) reached"}
        else:
            start = time.perf_counter()
            try:
                rec = {"ok": True, **fn()}
            except Exception as exc:  # noqa: BLE001 - recorded; the other sections still run
                rec = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=-4),
                }
            rec["seconds"] = round(time.perf_counter() - start, 2)
        self.report["sections"][name] = rec
        self.print_section(name, rec)
        self.write()

    def write(self) -> None:
        self.report["total_seconds"] = round(time.perf_counter() - self.t0, 2)
        self.json_path.write_text(json.dumps(self.report, indent=2, default=str))

    # -------------------------------------------------------------------------------- sections
    def environment(self) -> dict[str, Any]:
        dev = self.device
        out: dict[str, Any] = {
            "device": str(dev),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(),
            "faccent_widget": fw.__version__,
            "presets": self.presets,
            "gpu_preset": gpu_preset(),
        }
        if dev.type == "cuda":
            props = torch.cuda.get_device_properties(dev)
            out.update(
                name=props.name,
                capability=list(torch.cuda.get_device_capability(dev)),
                memory_gb=round(props.total_memory / 2**30, 1),
            )
        else:
            out.update(name=platform.processor() or platform.machine(), capability=None)
        policies = {}
        for name in self.models:
            run = fw.start_run(self.model(name), self.image, 0, **self.settings(self.presets[0], steps=1))
            policies[self.model(name).name] = dataclasses.asdict(run.policy) | {"precision": run.policy.precision}
        out["policies"] = policies
        out["policy_default_model"] = next(iter(policies.values()))["reason"]
        return out

    def sync(self) -> dict[str, Any]:
        model, dev = self.model(), self.device
        target = second_class(model, self.image)
        layer = model.default_reg_layer
        channels = model.features(torch.rand(1, 3, 64, 64, device=dev), [layer])[layer].shape[1]
        targets = [target, f"{layer}:3", fw.direction(layer, torch.ones(channels))]  # logit, channel, direction
        out: dict[str, Any] = {"mode": "cuda sync debug 'error'" if dev.type == "cuda" else "dispatch mode (CPU)"}
        all_ok = True
        variants = (("auto", None),) if self.quick else (("auto", None), ("fp16", "fp16"))  # CPU fp16 is slow
        for variant, autocast in variants:
            steps = 2 if self.quick else 4  # includes step 1, where λ's balance is computed
            # eager steps: a capture synchronises by design; the graphs section checks the replays
            settings = self.settings(gpu_preset(), noise=0.02, autocast=autocast, steps=100, cuda_graphs=False)
            run = fw.start_run(model, self.image, targets, **settings)
            ok, error, locations, stack = True, "", [], []
            try:
                synchronize(dev)
                with self._no_sync():
                    for _ in range(steps):
                        run.step()
                synchronize(dev)
            except Exception as exc:  # noqa: BLE001 - "error" mode raises RuntimeError; report any failure
                ok, error = False, f"{type(exc).__name__}: {exc}"
                frames = traceback.extract_tb(exc.__traceback__)
                stack = [f"{f.filename}:{f.lineno} {f.name}" for f in frames if "faccent_widget" in f.filename]
                stack += [
                    f"{f.filename}:{f.lineno} {f.name}" for f in frames[-3:] if "faccent_widget" not in f.filename
                ]
            if not ok and dev.type == "cuda":
                locations = self._sync_locations(model, targets, settings, steps)
            out[variant] = {
                "ok": ok,
                "error": error,
                "stack": stack,
                "sync_locations": locations,
                "policy": run.policy.reason,
            }
            all_ok &= ok
        out["ok"] = all_ok
        return out

    @contextlib.contextmanager
    def _no_sync(self) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode("default")
        else:
            with _NoHostSync():
                yield

    def _sync_locations(self, model: fw.Model, targets: list[Any], settings: dict[str, Any], steps: int) -> list[str]:
        """Where the steps synchronise: file:line of each distinct sync warning ("warn" mode)."""
        run = fw.start_run(model, self.image, targets, **settings)
        synchronize(self.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    run.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sorted({f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)})

    def correctness(self) -> dict[str, Any]:
        cpu_model = self.model() if self.device.type == "cpu" else fw.load_model()
        target = second_class(cpu_model, self.image)
        steps = 2 if self.quick else CORRECTNESS_STEPS
        settings = {
            "steps": steps,
            "n_crops": 2 if self.quick else 4,
            "input_size": 64 if self.quick else 128,
            "canvas": 64 if self.quick else 160,
            "noise": 0.02,
            "seed": 0,
            "autocast": False,
            "cuda_graphs": False,  # a CPU random stream on the device (below): eager steps on both sides
        }

        def history(model: fw.Model) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
            run = fw.start_run(model, self.image, target, **settings)
            run.generator = torch.Generator().manual_seed(0)  # CPU stream: the same crops and noise everywhere
            for _ in run:
                pass
            r = run.result()[0]
            return r.history["objective"], r.history["distance"], r.image

        def compare(a: tuple, b: tuple) -> dict[str, Any]:
            rel = np.abs(a[0] - b[0]) / np.maximum(np.abs(b[0]), 1e-6)
            tol = np.where(np.arange(len(rel)) < EARLY_STEPS, EARLY_TOL, LATE_TOL)
            return {
                "objective_rel_diff": [float(v) for v in rel],
                "max_rel_diff": float(rel.max()),
                "distance_max_abs_diff": float(np.abs(a[1] - b[1]).max()),
                "image_max_abs_diff": float((a[2] - b[2]).abs().max()),
                "within_tolerance": bool((rel <= tol).all()),
            }

        with tf32_off():
            cpu = history(cpu_model)
            floor = None
            if not self.quick:  # CPU fp32 vs a float64 copy of the model: the round-off floor (fp64 convs are slow)
                ref64 = fw.Model(
                    copy.deepcopy(cpu_model.module).double(),
                    mean=cpu_model.mean,
                    std=cpu_model.std,
                    input_size=cpu_model.input_size,
                    labels=cpu_model.labels,
                )
                floor = compare(cpu, history(ref64))
            if self.device.type == "cpu":  # nothing else to compare with: another thread count (reduction order)
                threads = torch.get_num_threads()
                torch.set_num_threads(max(1, threads // 2) if threads > 1 else 2)
                try:
                    other = compare(history(cpu_model), cpu)
                finally:
                    torch.set_num_threads(threads)
                versus = f"cpu fp32 ({threads} threads) vs cpu fp32 ({max(1, threads // 2) if threads > 1 else 2})"
            else:
                other = compare(history(self.model()), cpu)
                versus = f"{self.device} fp32 vs cpu fp32"
        return {
            "ok": other["within_tolerance"],
            "versus": versus,
            "steps": steps,
            "tolerance": {"step_0": EARLY_TOL, "later": LATE_TOL},
            "cpu_objective": [float(v) for v in cpu[0]],
            **other,
            "noise_floor_fp32_vs_fp64": floor,
        }

    def _time_steps(self, run: fw.AccentuationRun, warmup: int, repeats: int) -> tuple[float, float]:
        """(median synchronised ms/step, pipelined ms/step: ``repeats`` steps, one sync at the end)."""
        dev = self.device
        for _ in range(warmup):
            run.step()
        times = []
        for _ in range(repeats):
            synchronize(dev)
            t = time.perf_counter()
            run.step()
            synchronize(dev)
            times.append(time.perf_counter() - t)
        median = 1000 * statistics.median(times)
        if dev.type == "cpu":  # nothing to pipeline
            return median, median
        synchronize(dev)
        t = time.perf_counter()
        for _ in range(repeats):
            run.step()
        synchronize(dev)
        return median, 1000 * (time.perf_counter() - t) / repeats

    def speed(self) -> dict[str, Any]:
        warmup, repeats = (1, 1) if self.quick else (3, 10)
        rows = []
        for name in self.models:
            model = self.model(name)
            target = second_class(model, self.image)
            for preset in self.presets:
                reset_peak(self.device)
                run = fw.start_run(model, self.image, target, **self.settings(preset, steps=10_000))
                ms, ms_pipe = self._time_steps(run, warmup, repeats)
                del run
                synchronize(self.device)
                t = time.perf_counter()
                result = fw.accentuate(model, self.image, target, **self.settings(preset))
                seconds = time.perf_counter() - t  # result() copies to the host: synchronised
                rows.append(
                    {
                        "model": model.name,
                        "preset": preset,
                        "ms_per_step": ms,
                        "ms_per_step_pipelined": ms_pipe,
                        "steps": result.config.steps,
                        "seconds_per_accentuation": seconds,
                        "peak_mb": peak_mb(self.device),
                        "log_prob_gain": log_prob_gain(result),
                    }
                )
        out: dict[str, Any] = {"rows": rows}
        if not self.quick and self.device.type == "cuda":  # does the policy's precision pay, per model?
            out["precision_ms_per_step_pipelined"] = self.precision()
        return out

    def precision(self) -> list[dict[str, Any]]:
        """Pipelined ms/step of the GPU preset per model under fp32 / bf16 / fp16, ± channels_last."""
        precision = []
        for name in self.models:
            model = self.model(name)
            entry: dict[str, Any] = {"model": model.name, "preset": gpu_preset()}
            variants = (
                ("fp32", False, False),
                ("fp32_channels_last", False, True),
                ("bf16", "bf16", True),
                ("bf16_nchw", "bf16", False),
                ("fp16", "fp16", True),
            )
            for label, autocast, channels_last in variants:
                run = fw.start_run(model, self.image, 0, **self.settings(gpu_preset(), steps=10_000, autocast=autocast))
                run.policy = dataclasses.replace(run.policy, channels_last=channels_last)
                entry[label] = self._time_steps(run, 2, 6)[1]
            precision.append(entry)
        return precision

    def fp16(self) -> dict[str, Any]:
        model = self.model()
        target = second_class(model, self.image)
        runs = {}
        precisions = (
            (("fp32", False), ("fp16", "fp16")) if self.quick else (("fp32", False), ("bf16", "bf16"), ("fp16", "fp16"))
        )
        for label, autocast in precisions:
            run = fw.start_run(model, self.image, target, **self.settings(gpu_preset(), autocast=autocast))
            for _ in run:
                pass
            r = run.result()[0]
            runs[label] = {
                "policy": run.policy.reason,
                "log_prob_gain": log_prob_gain(r),
                "logit_gain": r.score.value - r.seed_score.value,
                "history_finite": bool(
                    np.isfinite(r.history["objective"]).all() and np.isfinite(r.history["distance"]).all()
                ),
                "nonfinite_gradients_dropped": int(run.nonfinite_steps.sum()),
            }
        # gradient fidelity at the seed: one step's attribution is Σ_c |∂objective/∂image|
        grads = {}
        variants = [
            ("fp32", False, None),
            ("bf16", "bf16", None),
            ("fp16_scaled", "fp16", None),
            ("fp16_unscaled", "fp16", 1.0),
        ]
        if self.quick:
            variants = [variants[0], variants[2]]
        for label, autocast, scale in variants:
            run = fw.start_run(model, self.image, target, **self.settings(gpu_preset(), steps=10, autocast=autocast))
            if scale is not None:
                run.policy = dataclasses.replace(run.policy, grad_scale=scale)
            run.step()
            grads[label] = run.attribution[0].double().cpu()
        ref = grads["fp32"]
        fidelity = {}
        for label in [v[0] for v in variants[1:]]:
            g = grads[label]
            fidelity[label] = {
                "cosine_vs_fp32": float((g * ref).sum() / (g.norm() * ref.norm() + 1e-30)),
                "rel_l1_vs_fp32": float((g - ref).abs().sum() / (ref.abs().sum() + 1e-30)),
                "underflow_fraction": float(((g == 0) & (ref > 0)).double().mean()),
                "finite": bool(torch.isfinite(g).all()),
            }
        ok = runs["fp16"]["history_finite"] and fidelity["fp16_scaled"]["finite"]
        return {
            "ok": ok,
            "runs": runs,
            "gradient_fidelity": fidelity,
            "grad_scale": device_policy(self.device, autocast="fp16").grad_scale,
        }

    def widget(self) -> dict[str, Any]:
        model = self.model()
        steps = 3 if self.quick else int(fw.PRESETS[gpu_preset() if self.device.type == "cuda" else "preview"].steps)
        reference = [self.image] if self.quick else None  # --quick: a one-image reference set for the mask
        w = fw.FaccentWidget(
            model, self.image, steps=steps, reference=reference, **{k: v for k, v in self.small.items() if k != "steps"}
        )
        sent: list[dict[str, Any]] = []
        w.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
        w._on_msg(w, {"type": "ready"}, [])  # Grad-CAM and the mask: not timed
        t_all = time.perf_counter()  # the click
        w._on_msg(w, {"type": "start"}, [])
        chunk_s, step_counts, last_step = [], [], 0
        first_frame_s = None
        for _ in range(10_000):
            t = time.perf_counter()
            before = len(sent)
            w._on_msg(w, {"type": "chunk", "budget_ms": 200}, [])  # what the browser sends
            chunk_s.append(time.perf_counter() - t)
            frames = [m for m in sent[before:] if m.get("type") == "frame"]
            errors = [m for m in sent[before:] if m.get("type") == "error"]
            if errors:
                raise RuntimeError(f"the widget answered a chunk with an error: {errors[0].get('message')}")
            frame = frames[-1]
            if first_frame_s is None:
                first_frame_s = time.perf_counter() - t_all
            step_counts.append(frame["step"] - last_step)
            last_step = frame["step"]
            if frame.get("done"):
                break
        total = time.perf_counter() - t_all
        steady = chunk_s[1:-1] or chunk_s
        return {
            "preset": w.preset,
            "steps": last_step,
            "chunks": len(chunk_s),
            "chunk_budget_s": w._chunk_budget_s,
            "first_frame_s": first_frame_s,
            "chunks_per_s": len(chunk_s) / total,
            "chunks_per_s_steady": 1.0 / statistics.mean(steady),
            "median_chunk_ms": 1000 * statistics.median(chunk_s),
            "steps_per_chunk": statistics.mean(step_counts),
            "seconds": total,
            "device_shown": w.device,
        }

    def gallery(self) -> dict[str, Any]:
        model = self.model()
        k = 2 if self.quick else 5  # --quick: top-2, to stay under a minute on a CPU
        targets = [p.index for p in model.predict(self.image, k=k)]
        settings = self.settings(gpu_preset())
        synchronize(self.device)
        t = time.perf_counter()
        batched = fw.accentuate(model, self.image, targets, **settings)
        t_batched = time.perf_counter() - t
        t = time.perf_counter()
        singles = [fw.accentuate(model, self.image, target, **settings) for target in targets]
        t_single = time.perf_counter() - t
        return {
            "preset": gpu_preset(),
            "k": k,
            "targets": targets,
            "batched_s": t_batched,
            "singles_s": t_single,
            "speedup": t_single / t_batched,
            "log_prob_gain_batched": [log_prob_gain(r) for r in batched],
            "log_prob_gain_singles": [log_prob_gain(r) for r in singles],
        }

    def graphs(self) -> dict[str, Any]:
        return _graph_sections.graphs(self)

    def floor(self) -> dict[str, Any]:
        return _graph_sections.floor(self)

    def triage(self) -> dict[str, Any]:
        return _graph_sections.triage(self)

    _print_graphs = staticmethod(_graph_sections.print_graphs)
    _print_floor = staticmethod(_graph_sections.print_floor)
    _print_triage = staticmethod(_graph_sections.print_triage)

    # -------------------------------------------------------------------------------- printing
    def print_section(self, name: str, rec: dict[str, Any]) -> None:
        status = "ok" if rec.get("ok") else ("SKIPPED" if "skipped" in rec else "FAIL")
        print(f"\n== {name}: {status} ({rec.get('seconds', 0):.1f} s)", flush=True)
        if rec.get("error"):
            print(f"   {rec['error']}")
        if "skipped" in rec:
            print(f"   {rec['skipped']}")
        printer = getattr(self, f"_print_{name}", None)
        if printer is not None and "error" not in rec and "skipped" not in rec:
            printer(rec)
        sys.stdout.flush()

    def _print_environment(self, r: dict[str, Any]) -> None:
        cap = r.get("capability")
        print(
            f"   {r['name']}  {f'sm{cap[0]}{cap[1]}' if cap else ''}  torch {r['torch']}  CUDA {r['cuda']}  "
            f"cuDNN {r['cudnn']}  presets {', '.join(r['presets'])} (GPU preset: {r['gpu_preset']})"
        )
        for model, p in r["policies"].items():
            print(f"   policy {model}: {p['reason']}; chunk {p['chunk_budget_s']} s")

    def _print_sync(self, r: dict[str, Any]) -> None:
        print(f"   {r['mode']}")
        for variant in ("auto", "fp16"):
            if variant not in r:
                continue
            v = r[variant]
            print(f"   {variant:5s} {'pass' if v['ok'] else 'FAIL'}  {v['error'][:300]}")
            for frame in v.get("stack", []):
                print(f"         in {frame}")
            for loc in v["sync_locations"]:
                print(f"         syncs at {loc}")

    def _print_correctness(self, r: dict[str, Any]) -> None:
        print(
            f"   {r['versus']}: max relative objective difference {r['max_rel_diff']:.2e} over {r['steps']} steps "
            f"(tolerance {EARLY_TOL:g} for step 0, {LATE_TOL:g} after)"
            + (
                f"; floor fp32 vs fp64 {r['noise_floor_fp32_vs_fp64']['max_rel_diff']:.2e}"
                if r["noise_floor_fp32_vs_fp64"]
                else ""
            )
        )
        print("   per step: " + " ".join(f"{v:.1e}" for v in r["objective_rel_diff"]))

    def _print_speed(self, r: dict[str, Any]) -> None:
        print(
            f"   {'model':<34s} {'preset':<8s} {'ms/step':>8s} {'pipelined':>9s} {'steps':>5s} {'s/accent':>8s} "
            f"{'peak MB':>8s} {'Δlog p':>7s}"
        )
        for row in r["rows"]:
            print(
                f"   {row['model']:<34s} {row['preset']:<8s} {row['ms_per_step']:8.1f} "
                f"{row['ms_per_step_pipelined']:9.1f} {row['steps']:5d} {row['seconds_per_accentuation']:8.2f} "
                f"{fmt(row['peak_mb'], '.0f'):>8s} {fmt(row['log_prob_gain'], '+.2f'):>7s}"
            )
        for e in r.get("precision_ms_per_step_pipelined", []):
            print(
                f"   {e['model']:<34s} {e['preset']:<8s} ms/step pipelined: "
                + "  ".join(f"{k} {v:.1f}" for k, v in e.items() if k not in ("model", "preset"))
            )

    def _print_fp16(self, r: dict[str, Any]) -> None:
        for label, v in r["runs"].items():
            print(
                f"   {label:5s} Δlog p {fmt(v['log_prob_gain'], '+.3f')}  Δlogit {v['logit_gain']:+.3f}  finite "
                f"{v['history_finite']}  dropped gradients {v['nonfinite_gradients_dropped']}"
            )
        for label, v in r["gradient_fidelity"].items():
            print(
                f"   grad {label:13s} cosine {v['cosine_vs_fp32']:.5f}  rel L1 {v['rel_l1_vs_fp32']:.2e}  "
                f"underflow {v['underflow_fraction']:.2e}  finite {v['finite']}"
            )

    def _print_widget(self, r: dict[str, Any]) -> None:
        print(
            f"   preset {r['preset']}, {r['steps']} steps in {r['chunks']} chunks ({r['seconds']:.2f} s): "
            f"{r['chunks_per_s']:.1f} chunks/s ({r['chunks_per_s_steady']:.1f} steady), "
            f"{r['steps_per_chunk']:.1f} steps/chunk, median chunk {r['median_chunk_ms']:.0f} ms "
            f"(budget {1000 * r['chunk_budget_s']:.0f} ms); click → first frame {r['first_frame_s']:.2f} s; "
            f"panel shows device {r['device_shown']}"
        )

    def _print_gallery(self, r: dict[str, Any]) -> None:
        print(
            f"   top-{r['k']}, preset {r['preset']}: one batch {r['batched_s']:.2f} s, {r['k']} runs {r['singles_s']:.2f} s "  # noqa: E501
            f"({r['speedup']:.2f}x)"
        )

    def summary(self) -> None:
        print("\n== summary")
        for name, rec in self.report["sections"].items():
            status = "ok" if rec.get("ok") else ("skipped" if "skipped" in rec else "FAIL")
            print(f"   {name:<12s} {status:<8s} {rec.get('seconds', 0):6.1f} s")
        print(f"   total {time.perf_counter() - self.t0:.1f} s; JSON written to {self.json_path.resolve()}")


#: the sections, in the order they run
ORDER = ("environment", "sync", "correctness", "speed", "graphs", "floor", "widget", "fp16", "gallery", "triage")


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=default_device(), help="cuda, cuda:1, mps or cpu (default: the best there is)")
    p.add_argument("--quick", action="store_true", help="tiny settings (3 steps, 2 crops of 64 px): the CI form")
    p.add_argument(
        "--presets",
        nargs="+",
        default=None,
        help=f"presets to time (default: preview and the GPU preset; known: {', '.join(fw.PRESETS)})",
    )
    p.add_argument("--models", nargs="+", default=None, help="models to time (default: efficientnet_lite0 googlenet)")
    p.add_argument("--json", default="device_check.json", help="JSON output (default device_check.json)")
    p.add_argument(
        "--time-limit", type=float, default=420.0, help="start no new section after this many seconds (default 420)"
    )
    p.add_argument(
        "--sections",
        nargs="+",
        default=None,
        choices=[*ORDER],
    )
    args = p.parse_args(argv)
    unknown = [name for name in (args.presets or []) if name not in fw.PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(fw.PRESETS)}")
    check = DeviceCheck(args)
    print(
        f"faccent-widget device check on {check.device} ({'quick' if check.quick else 'full'}), "
        f"presets {', '.join(check.presets)}, models {', '.join(check.models)}",
        flush=True,
    )
    for name in ORDER:
        if args.sections is None or name in args.sections:
            check.section(name, getattr(check, name))
    check.summary()
    check.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
