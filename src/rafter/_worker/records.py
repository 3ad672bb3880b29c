"""What a worker tells the driver about an exception: a plain, always picklable record."""

from __future__ import annotations

import os
import time
import traceback


def _user_traceback(exc: BaseException):
    """The traceback without rafter's own frames on top (the user's code is what matters)."""
    tb = exc.__traceback__
    here = os.path.dirname(os.path.abspath(__file__))
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(here):
        tb = tb.tb_next
    return tb


def exception_record(exc: BaseException, phase: str) -> dict:
    """What the driver needs to explain an exception, always picklable."""
    from rafter._util.pickling import try_cloudpickle

    return {
        "type": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, _user_traceback(exc))),
        "phase": phase,
        "time": time.time(),
        "pickled": try_cloudpickle(exc),
    }
