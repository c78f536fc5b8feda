"""An emulated Zomro API for trying the operator without an account and for injecting faults.

It knows HTTP and Zomro's rules, nothing of Kubernetes and nothing of our client: its own day
table and validation are written apart from ``zomro_backup_operator.zomro`` on purpose.
"""

from zomro_backup_operator.sandbox.clock import SandboxClock
from zomro_backup_operator.sandbox.command import serve
from zomro_backup_operator.sandbox.config import SandboxConfig, load_config
from zomro_backup_operator.sandbox.control import (
    SandboxControl,
    SandboxProcess,
    start_sandbox_process,
)
from zomro_backup_operator.sandbox.faults import Faults
from zomro_backup_operator.sandbox.model import ManualClock, SandboxState
from zomro_backup_operator.sandbox.server import RunningSandbox, Sandbox, running_sandbox

__all__ = [
    "Faults",
    "ManualClock",
    "RunningSandbox",
    "Sandbox",
    "SandboxClock",
    "SandboxConfig",
    "SandboxControl",
    "SandboxProcess",
    "SandboxState",
    "load_config",
    "running_sandbox",
    "serve",
    "start_sandbox_process",
]
