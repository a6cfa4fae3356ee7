"""Steps replayed as graphs (``cuda_graphs``, core/step_graphs.py), checked on the CPU.

A real CUDA graph needs a GPU (``benchmarks/device_check.py`` compares graphed and eager runs there).
Here the emulating backend "captures" a step by keeping its function and "replays" it by calling it,
so everything around the graphs is exercised with the real default model: the warm-up and capture
order, the device-side history rows and counter, the attribution weight buffer, the copies out of the
static output, the fallback with a rewound random stream. The emulated run executes the very same
operations as the eager one, so the two must agree bit for bit.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import faccent_widget as fw
from faccent_widget.core import step_graphs
from faccent_widget.core.config import check_setting

FAST = dict(n_crops=2, input_size=96, canvas=96, noise=0.02)


def _eager_and_graphed(model, image, targets, lam, **settings):
    eager = fw.start_run(model, image, targets, lam=lam, cuda_graphs=False, **settings)
    eager_states = list(eager)
    with step_graphs.emulated():
        graphed = fw.start_run(model, image, targets, lam=lam, cuda_graphs=True, **settings)
        graphed_states = list(graphed)
    return eager, eager_states, graphed, graphed_states


@pytest.mark.parametrize("autocast", [False, "fp16"])
def test_graphed_run_equals_the_eager_run_bit_for_bit(model, chelsea, autocast):
    """Two items (a batched run, as the top-5 gallery), λ > 0 with attribution samples: both step kinds
    are captured and replayed, and every history value, snapshot, attribution and final image equals the
    eager run's. fp16 forces the T4 route (gradient scale, non-finite guard) through the same path."""
    settings = dict(seed=4, steps=9, attribution_every=3, autocast=autocast, **FAST)
    eager, es, graphed, gs = _eager_and_graphed(model, chelsea, ["tabby", "tiger cat"], [1.0, 0.3], **settings)
    g = graphed.graphs
    assert g is not None and g.reason is None
    assert g.kinds == {(True, False), (True, True)}
    # steps 0 (no regulariser) and 1 (balance) eager; step 2 and step 4 (the first sampled after the
    # balance step) warm their kinds up; the other 5 steps are replays
    assert g.replays == 5
    assert g.graphs == {}  # released after the last step (their memory pools with them)
    for a, b in zip(es, gs):
        assert torch.equal(a.image, b.image) and torch.equal(a.objective, b.objective)
        assert torch.equal(a.distance, b.distance)
    for a, b in zip(eager.result(), graphed.result()):
        assert torch.equal(a.image, b.image) and torch.equal(a.snapshots, b.snapshots)
        assert torch.equal(a.attribution, b.attribution) and a.attribution.abs().sum() > 0
        assert (a.history["objective"] == b.history["objective"]).all()
        assert (a.history["distance"] == b.history["distance"]).all()
        assert a.lam_effective == b.lam_effective
    assert torch.equal(eager.nonfinite_steps, graphed.nonfinite_steps)


def test_replayed_states_keep_their_own_images(model, chelsea):
    """A replay reuses its static output; each StepState holds a copy, so states kept by a caller (the
    widget's frames, a user's list) still show their own step after later replays."""
    _, es, _, gs = _eager_and_graphed(model, chelsea, "tabby", 1.0, seed=1, steps=6, **FAST)
    assert len({s.image.data_ptr() for s in gs}) == len(gs)
    assert all(torch.equal(a.image, b.image) for a, b in zip(es, gs))
    assert not torch.equal(gs[-1].image, gs[-2].image)  # it moved between the last two replays


def test_unregularised_run_graphs_its_steps(model, chelsea):
    """λ = 0 (and noise-seeded visualisations): every step after step 0 is one kind, exact attribution."""
    eager, _, graphed, _ = _eager_and_graphed(model, chelsea, "tabby", 0.0, seed=2, steps=6, **FAST)
    g = graphed.graphs
    assert g is not None and g.kinds == {(False, True)} and g.replays == 4
    a, b = eager.result()[0], graphed.result()[0]
    assert torch.equal(a.image, b.image) and torch.equal(a.attribution, b.attribution)


class _ReadsBack(torch.nn.Module):
    """A classifier whose forward branches on a value read back to the host: not replayable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 4, stride=4)
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)).mean((2, 3))
        if float(y.detach().abs().max()) > 1e6:  # data-dependent control flow
            y = y / 2
        return self.fc(y)


def test_a_step_that_reads_back_to_the_host_falls_back_to_eager(chelsea):
    """The warm-up's probe sees the read-back; the run says why once and goes on eagerly from the same
    step with the random stream rewound, so it equals the eager run; the model is left as it was."""
    torch.manual_seed(0)
    net = _ReadsBack().eval()
    model = fw.Model(net, input_size=32, labels=[f"c{i}" for i in range(5)])
    flags = [p.requires_grad for p in net.parameters()]
    settings = dict(steps=5, n_crops=2, input_size=32, canvas=48, seed=0, lam=1.0)
    eager = fw.accentuate(model, chelsea, 1, cuda_graphs=False, **settings)
    with step_graphs.emulated(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = fw.start_run(model, chelsea, 1, cuda_graphs=True, **settings)
        list(run)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "reads a tensor back to the host" in messages[0], messages
    assert run.graphs_off_reason is not None and "host" in run.graphs_off_reason
    assert run.graphs is not None and run.graphs.replays == 0
    assert torch.equal(run.result()[0].image, eager.image)
    assert not net.training and [p.requires_grad for p in net.parameters()] == flags
    assert not net._forward_hooks and not net.fc._forward_hooks


def test_the_setting_is_off_on_the_cpu_and_says_so_when_asked_for(model, chelsea):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default (None) on the CPU: eager, silently
        assert fw.start_run(model, chelsea, "tabby", steps=2, **FAST).graphs is None
    with pytest.warns(RuntimeWarning, match="CUDA graphs need a CUDA device; this run is on cpu"):
        run = fw.start_run(model, chelsea, "tabby", steps=2, cuda_graphs=True, **FAST)
    assert run.graphs is None and run.config.cuda_graphs is True
    assert check_setting("cuda_graphs", None) is None and check_setting("cuda_graphs", False) is False
    with pytest.raises(TypeError, match="cuda_graphs"):
        fw.start_run(model, chelsea, "tabby", steps=2, cuda_graphs="on", **FAST)


def test_the_widget_with_graphed_steps_shows_the_eager_runs_frames(model, chelsea):
    """The panel driven as the browser drives it (chunks of one step, Stop, Continue) with graphed steps:
    every frame's step, curve and final image equal those of the same panel with eager steps."""
    from test_widget import chunk, make, run_to_done, send

    def drive(graphs: bool) -> tuple[list[dict], bytes, list[float], int]:
        w, rec = make(model, chelsea, steps=7, lam=1.0, cuda_graphs=graphs, attribution_every=3)
        send(w, "ready")
        send(w, "start")
        frames = [chunk(w, rec)[0] for _ in range(3)]
        send(w, "stop")
        send(w, "continue")
        frames += [m for m, _ in run_to_done(w, rec)]
        run = w._session.single_run
        return frames, w.accent_png, w.result.history["objective"].tolist(), run.graphs.replays if run.graphs else 0

    eager = drive(False)
    with step_graphs.emulated():
        graphed = drive(True)
    assert [f["step"] for f in graphed[0]] == [f["step"] for f in eager[0]] and graphed[0][-1]["done"]
    assert [f["objective_history"] for f in graphed[0]] == [f["objective_history"] for f in eager[0]]
    assert len(graphed[0][-1]["objective_history"]) == 7
    assert graphed[1] == eager[1] and graphed[2] == eager[2]
    assert eager[3] == 0 and graphed[3] == 3  # steps 0, 1 eager, 2 and 4 warm-ups, 3, 5, 6 replays
