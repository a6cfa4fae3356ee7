"""One way to run a module with temporary forward hooks on named sub-modules.

Every probe of a model's insides — the activations the engine reads, the one traced pass that tells
layouts and call order, the output-shape probe, Grad-CAM's capture and the validation tools — runs
through :func:`hooked_forward`: hooks are registered on the named sub-modules, the forward pass runs,
and the hooks are removed afterwards, also after an error. A hook may end the pass early by raising
:class:`StopForward` (the caller then gets ``stopped=True`` and no output); any exception raised
after that signal — a user's forward that wraps it in another exception type, say — counts as the
stop too.

:func:`preserved` is the other half of never changing a user's module while running it: eval mode
(and frozen parameters) inside, every flag restored on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ForwardHook", "HookedResult", "PreHook", "StopForward", "hooked_forward", "preserved"]

ForwardHook = Callable[[str, Any], Any]
"""``hook(name, output)``: called after the named module returns; a non-None return replaces its output."""

PreHook = Callable[[str], None]
"""``hook(name)``: called before the named module runs."""


class StopForward(Exception):
    """Raised by a hook to end the forward pass early (nothing after that layer runs)."""


@dataclass(frozen=True)
class HookedResult:
    """What :func:`hooked_forward` returns: the module's output (None when a hook stopped the pass)."""

    output: Any
    stopped: bool


def hooked_forward(
    module: nn.Module,
    *inputs: Any,
    hooks: Mapping[str, ForwardHook] | None = None,
    pre_hooks: Mapping[str, PreHook] | None = None,
    modules: Mapping[str, nn.Module] | None = None,
) -> HookedResult:
    """Run ``module(*inputs)`` with temporary hooks on its sub-modules, named as in ``named_modules()``.

    Args:
        module: the module to run.
        inputs: its positional inputs.
        hooks: forward hooks by sub-module name, ``hook(name, output)``; a non-None return value
            replaces the sub-module's output.
        pre_hooks: forward pre-hooks by sub-module name, ``hook(name)``.
        modules: ``dict(module.named_modules())`` when the caller already holds it (saves a walk of
            the module tree on every call).

    Returns:
        A :class:`HookedResult`; ``stopped`` is True when a hook raised :class:`StopForward`.

    Raises:
        KeyError: a hook names no sub-module of ``module``.
    """
    hooks = hooks or {}
    pre_hooks = pre_hooks or {}
    table = modules if modules is not None else dict(module.named_modules())
    missing = [n for n in (*hooks, *pre_hooks) if n not in table]
    if missing:
        raise KeyError(f"no sub-module named {missing[0]!r} in {type(module).__name__}")
    stopped: list[bool] = []

    def forward_hook(name: str, fn: ForwardHook) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            try:
                return fn(name, output)
            except StopForward:
                stopped.append(True)
                raise

        return hook

    def pre_hook(name: str, fn: PreHook) -> Callable[[nn.Module, Any], None]:
        def hook(_module: nn.Module, _args: Any) -> None:
            try:
                fn(name)
            except StopForward:
                stopped.append(True)
                raise

        return hook

    handles = []
    try:
        for name, before in pre_hooks.items():
            handles.append(table[name].register_forward_pre_hook(pre_hook(name, before)))
        for name, after in hooks.items():
            handles.append(table[name].register_forward_hook(forward_hook(name, after)))
        try:
            output = module(*inputs)
        except Exception:
            if not stopped:
                raise
            return HookedResult(None, True)
    finally:
        for handle in handles:
            handle.remove()
    return HookedResult(output, False)


@contextlib.contextmanager
def preserved(module: nn.Module, *, freeze: bool = True) -> Iterator[None]:
    """Context: ``module`` in eval mode (and, with ``freeze``, its parameters not requiring grad)
    inside; every sub-module's ``training`` flag and every parameter's ``requires_grad`` restored on
    exit, also after an exception."""
    # touched only where they change: setting a flag on every module and parameter twice per call
    # was a few ms of Python per engine step
    modules = list(module.modules())
    modes = [m.training for m in modules]
    flags = [(p, p.requires_grad) for p in module.parameters()] if freeze else []
    try:
        if any(modes):
            module.eval()
        for p, flag in flags:
            if flag:
                p.requires_grad_(False)
        yield
    finally:
        for m, mode in zip(modules, modes):
            if m.training != mode:
                m.training = mode
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
