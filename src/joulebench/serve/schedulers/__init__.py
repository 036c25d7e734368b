"""Schedulers behind one interface, chosen by name: ``sequential``, ``dynamic``, ``continuous``."""

from joulebench.serve.schedulers.base import (
    SCHEDULERS,
    Scheduler,
    StepSink,
    make_scheduler,
    register_scheduler,
)
from joulebench.serve.schedulers.continuous import ContinuousScheduler
from joulebench.serve.schedulers.dynamic import DynamicScheduler
from joulebench.serve.schedulers.sequential import SequentialScheduler

__all__ = [
    "SCHEDULERS",
    "ContinuousScheduler",
    "DynamicScheduler",
    "Scheduler",
    "SequentialScheduler",
    "StepSink",
    "make_scheduler",
    "register_scheduler",
]
