"""SIGTERM as an exception: Slurm's time limit and preemption, and ``scancel``, send SIGTERM and
wait (``KillWait``) before SIGKILL. Python's default is to die on the spot, skipping every
``finally``: temporary siblings stay behind and a training run loses everything since its last
checkpoint. With :func:`install`, SIGTERM raises :class:`Terminated` (a ``SystemExit`` with
status 128 + 15) wherever the main thread is, so the atomic writers remove their temporaries;
inside :func:`deferred` it only sets a flag, which a training loop polls between steps to save
its state and then stop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(SystemExit):
    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class _Flag:
    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


_deferring: list[_Flag] = []


def _handler(signum, frame) -> None:
    if _deferring:
        _deferring[-1].signum = signum
        return
    raise Terminated(signum)


def install() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def deferred() -> Iterator[_Flag]:
    """Within the block SIGTERM is noted, not raised: poll ``flag.requested`` at safe points and
    raise :class:`Terminated` yourself once the work is saved. A SIGTERM still pending when the
    block ends is raised then."""
    flag = _Flag()
    _deferring.append(flag)
    try:
        yield flag
    finally:
        _deferring.remove(flag)
    if flag.requested:
        raise Terminated(flag.signum)
