"""The actor system: one supervised trio actor per host, coordinated by the scheduler actor."""

from .scheduler import Scheduler

__all__ = ["Scheduler"]
