"""Checks several test modules share: the weights did not change, no hook was left behind."""

from __future__ import annotations

import hashlib


def weights_digest(bridge) -> str:
    """A sha256 over every parameter and buffer of ``bridge``, by name."""
    h = hashlib.sha256()
    for name, p in sorted(bridge.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def no_hooks(bridge) -> bool:
    """Whether no forward or backward hook remains on any hook point of ``bridge``."""
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in bridge.hook_dict.values())
