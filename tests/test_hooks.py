"""core.hooks.hooked_forward: the one runner of temporary forward hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from faccent_widget.core.hooks import StopForward, hooked_forward


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def _hook_counts(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def test_hooks_see_outputs_in_order_and_are_removed() -> None:
    net, x = _net(), torch.randn(3, 4)
    seen: list[str] = []
    result = hooked_forward(
        net,
        x,
        hooks={"2": lambda n, o: seen.append(n), "0": lambda n, o: seen.append(n)},
        pre_hooks={"1": lambda n: seen.append("pre" + n)},
    )
    assert seen == ["0", "pre1", "2"]
    assert not result.stopped and torch.equal(result.output, net(x))
    assert _hook_counts(net) == 0


def test_a_hook_can_replace_an_output() -> None:
    net, x = _net(), torch.randn(3, 4)
    result = hooked_forward(net, x, hooks={"1": lambda n, o: torch.zeros_like(o)})
    assert torch.allclose(result.output, net[2].bias.expand(3, 2))


def test_stop_ends_the_pass_and_later_modules_do_not_run() -> None:
    net, x = _net(), torch.randn(3, 4)
    ran: list[str] = []

    def stop(name: str, output: torch.Tensor) -> None:
        raise StopForward

    result = hooked_forward(net, x, hooks={"0": stop, "2": lambda n, o: ran.append(n)})
    assert result.stopped and result.output is None and ran == []
    assert _hook_counts(net) == 0


def test_errors_propagate_and_hooks_are_removed() -> None:
    net = _net()
    with pytest.raises(RuntimeError):
        hooked_forward(net, torch.randn(3, 5), hooks={"1": lambda n, o: None})
    assert _hook_counts(net) == 0
    with pytest.raises(KeyError, match="no sub-module named 'nope'"):
        hooked_forward(net, torch.randn(3, 4), hooks={"nope": lambda n, o: None})
