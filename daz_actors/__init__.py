"""daz-actors: a CyTube chat bot runtime of supervised trio actors with a durable retry queue."""

from ._actor import Actor as Actor
from ._actor import ActorContext as ActorContext
from ._actor import Startable as Startable
from ._actor import actor_factory as actor_factory
from ._backoff import BackoffPolicy as BackoffPolicy
from ._backoff import Jitter as Jitter
from ._bus import EventBus as EventBus
from ._bus import Overflow as Overflow
from ._bus import Published as Published
from ._bus import Subscription as Subscription
from ._errors import ActorCrashed as ActorCrashed
from ._errors import ActorStopped as ActorStopped
from ._errors import AskTimeout as AskTimeout
from ._errors import ConfigError as ConfigError
from ._errors import DazActorsError as DazActorsError
from ._errors import NameTaken as NameTaken
from ._errors import NoSuchActor as NoSuchActor
from ._errors import StartFailed as StartFailed
from ._errors import SupervisorGaveUp as SupervisorGaveUp
from ._errors import UnknownActorKind as UnknownActorKind
from ._events import ActorFailed as ActorFailed
from ._events import FailureEvent as FailureEvent
from ._ref import ActorRef as ActorRef
from ._registry import Registry as Registry
from ._supervision_policy import Restart as Restart
from ._supervision_policy import Strategy as Strategy
from ._supervision_policy import SupervisorPolicy as SupervisorPolicy
from ._supervisor import ChildInfo as ChildInfo
from ._supervisor import ChildSpec as ChildSpec
from ._supervisor import ChildState as ChildState
from ._supervisor import Supervisor as Supervisor
from ._tree import Tree as Tree
from ._tree import run_tree as run_tree

__version__ = "0.1.0"
