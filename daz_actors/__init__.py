"""daz-actors: a CyTube chat bot runtime of supervised trio actors with a durable retry queue.

The public names are imported when first used (PEP 562), so that a command such as
``daz-actors --help`` does not import the whole runtime, PostgreSQL driver and chat stack
first. Type checkers see ordinary imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

if TYPE_CHECKING:
    from .app.builtin_kinds import default_kinds as default_kinds
    from .app.config import Config as Config
    from .app.config import load_config as load_config
    from .app.runner import run_config as run_config
    from .runtime.actor import Actor as Actor
    from .runtime.actor import ActorContext as ActorContext
    from .runtime.actor import Startable as Startable
    from .runtime.actor import actor_factory as actor_factory
    from .runtime.backoff import BackoffPolicy as BackoffPolicy
    from .runtime.backoff import Jitter as Jitter
    from .runtime.breaker import BreakerState as BreakerState
    from .runtime.bus import EventBus as EventBus
    from .runtime.bus import Overflow as Overflow
    from .runtime.bus import Published as Published
    from .runtime.bus import Subscription as Subscription
    from .runtime.errors import ActorCrashed as ActorCrashed
    from .runtime.errors import ActorStopped as ActorStopped
    from .runtime.errors import AskTimeout as AskTimeout
    from .runtime.errors import ConfigError as ConfigError
    from .runtime.errors import DazActorsError as DazActorsError
    from .runtime.errors import Killed as Killed
    from .runtime.errors import NameTaken as NameTaken
    from .runtime.errors import NoSuchActor as NoSuchActor
    from .runtime.errors import StartFailed as StartFailed
    from .runtime.errors import StopForced as StopForced
    from .runtime.errors import SupervisorGaveUp as SupervisorGaveUp
    from .runtime.errors import UnknownActorKind as UnknownActorKind
    from .runtime.events import ActorFailed as ActorFailed
    from .runtime.events import FailureEvent as FailureEvent
    from .runtime.kinds import ActorKind as ActorKind
    from .runtime.kinds import ActorKinds as ActorKinds
    from .runtime.kinds import BuildContext as BuildContext
    from .runtime.kinds import NoParams as NoParams
    from .runtime.ref import ActorRef as ActorRef
    from .runtime.registry import Registry as Registry
    from .runtime.supervision_policy import Restart as Restart
    from .runtime.supervision_policy import Strategy as Strategy
    from .runtime.supervision_policy import SupervisorPolicy as SupervisorPolicy
    from .runtime.supervisor import ChildInfo as ChildInfo
    from .runtime.supervisor import ChildSpec as ChildSpec
    from .runtime.supervisor import ChildState as ChildState
    from .runtime.supervisor import Supervisor as Supervisor
    from .runtime.tree import Tree as Tree
    from .runtime.tree import run_tree as run_tree
    from .storage.errors import CircuitOpen as CircuitOpen
    from .storage.errors import DatabaseUnavailable as DatabaseUnavailable
    from .storage.errors import QueueInputError as QueueInputError
    from .storage.errors import SqlError as SqlError
    from .storage.sql_messages import GatewayStatus as GatewayStatus
    from .storage.sql_messages import SqlClient as SqlClient

# public name -> the module (relative to this package) that defines it
_EXPORTS: dict[str, str] = {
    "default_kinds": ".app.builtin_kinds",
    "Config": ".app.config",
    "load_config": ".app.config",
    "run_config": ".app.runner",
    "Actor": ".runtime.actor",
    "ActorContext": ".runtime.actor",
    "Startable": ".runtime.actor",
    "actor_factory": ".runtime.actor",
    "BackoffPolicy": ".runtime.backoff",
    "Jitter": ".runtime.backoff",
    "BreakerState": ".runtime.breaker",
    "EventBus": ".runtime.bus",
    "Overflow": ".runtime.bus",
    "Published": ".runtime.bus",
    "Subscription": ".runtime.bus",
    "ActorCrashed": ".runtime.errors",
    "ActorStopped": ".runtime.errors",
    "AskTimeout": ".runtime.errors",
    "ConfigError": ".runtime.errors",
    "DazActorsError": ".runtime.errors",
    "Killed": ".runtime.errors",
    "NameTaken": ".runtime.errors",
    "NoSuchActor": ".runtime.errors",
    "StartFailed": ".runtime.errors",
    "StopForced": ".runtime.errors",
    "SupervisorGaveUp": ".runtime.errors",
    "UnknownActorKind": ".runtime.errors",
    "ActorFailed": ".runtime.events",
    "FailureEvent": ".runtime.events",
    "ActorKind": ".runtime.kinds",
    "ActorKinds": ".runtime.kinds",
    "BuildContext": ".runtime.kinds",
    "NoParams": ".runtime.kinds",
    "ActorRef": ".runtime.ref",
    "Registry": ".runtime.registry",
    "Restart": ".runtime.supervision_policy",
    "Strategy": ".runtime.supervision_policy",
    "SupervisorPolicy": ".runtime.supervision_policy",
    "ChildInfo": ".runtime.supervisor",
    "ChildSpec": ".runtime.supervisor",
    "ChildState": ".runtime.supervisor",
    "Supervisor": ".runtime.supervisor",
    "Tree": ".runtime.tree",
    "run_tree": ".runtime.tree",
    "CircuitOpen": ".storage.errors",
    "DatabaseUnavailable": ".storage.errors",
    "QueueInputError": ".storage.errors",
    "SqlError": ".storage.errors",
    "GatewayStatus": ".storage.sql_messages",
    "SqlClient": ".storage.sql_messages",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it (module-level ``__getattr__``)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (not this module's own helpers such as ``importlib``)."""
    return sorted(__all__)
