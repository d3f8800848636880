"""How a command ends when it is interrupted: SIGINT (Ctrl-C) and SIGTERM become exceptions
in the main thread, so that every ``with`` and ``finally`` on the way out runs (the
temporary output of :func:`~ul4m4_gpu.io.files.atomic_write` is removed, a Dask cluster
started for the command is closed), and :func:`~ul4m4_gpu.cli.commands.main` prints one
line and exits with 128 + the signal number, as a shell reports it: 130 and 143.

Only a process killed outright (SIGKILL, a power cut) runs none of that.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading


class Interrupted(BaseException):
    """The command was interrupted by ``signal`` (a ``BaseException``, like
    ``KeyboardInterrupt``, so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


#: Seconds after which a signal whose exception was swallowed is raised again.
RETRY_DELAY = 0.01


class _SignalsAsExceptions:
    """The handlers and ``sys.unraisablehook`` of :func:`signals_as_exceptions`."""

    def __init__(self):
        self.active, self.in_hook = True, False
        self.previous_hook = sys.unraisablehook

    def handle(self, signum, frame):
        if self.in_hook:  # raising here would be swallowed too: later
            self.raise_later(signum)
            return
        raise Interrupted(signum)

    def hook(self, unraisable):
        if not isinstance(unraisable.exc_value, Interrupted):
            self.previous_hook(unraisable)
            return
        self.in_hook = True
        try:
            self.raise_later(unraisable.exc_value.signum)
        finally:
            self.in_hook = False

    def raise_later(self, signum: int) -> None:
        """Deliver ``signum`` to the main thread again after :data:`RETRY_DELAY` (from
        another thread, so not inside the callback that swallowed it), unless the block
        has ended by then."""
        def deliver():
            if self.active:
                _thread.interrupt_main(signum)

        timer = threading.Timer(RETRY_DELAY, deliver)
        timer.daemon = True
        timer.start()


@contextlib.contextmanager
def signals_as_exceptions():
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread
    (a signal ignored when the block starts, SIGINT in a background job say, stays
    ignored); the previous handlers come back on the way out. Does nothing outside the
    main thread, where Python cannot set handlers.

    Python runs a signal handler wherever the main thread is, a weakref callback or a
    ``__del__`` included, where an exception is not raised but swallowed (printed as
    "Exception ignored in ..."). There ``sys.unraisablehook`` takes it, silently, and the
    signal is delivered again a moment later from another thread, until it lands where it
    can be raised: the command stops all the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = _SignalsAsExceptions()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, state.handle)
    sys.unraisablehook = state.hook
    try:
        yield
    finally:
        state.active = False
        sys.unraisablehook = state.previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)
