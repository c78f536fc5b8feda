"""Client for Zomro's BILLmanager API. Knows HTTP and Zomro, nothing of Kubernetes.

``ZomroClient`` (one per credential set) with ``ClientOptions`` and ``Credentials``; every failure
is a ``ZomroError`` from ``errors``; values are the typed ``models``.
"""

from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials

__all__ = ["ClientOptions", "Credentials", "ZomroClient"]
