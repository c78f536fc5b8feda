"""The runtime's pools when a Secret is rotated: the old credential set's HTTP client and idle
instance slots go, unless another Secret still holds the same credentials."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import cast

from zomro_backup_operator.kube import Kube
from zomro_backup_operator.runtime import Runtime
from zomro_backup_operator.secret_store import CredentialStore
from zomro_backup_operator.settings import SecretRef, Settings

INSTANCE = "5203773"
TEAM = SecretRef(namespace="team", name="zomro")
OTHER = SecretRef(namespace="other", name="zomro")


def _data(username: str, password: str) -> Mapping[str, str]:
    return {
        "username": base64.b64encode(username.encode()).decode(),
        "password": base64.b64encode(password.encode()).decode(),
    }


class Secrets:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Mapping[str, str]] = {}

    def read_secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.data.get((namespace, name))


def _runtime(secrets: Secrets) -> Runtime:
    rt = Runtime.build(Settings.from_env({}), kube=cast(Kube, secrets))
    # Re-read on every call, so that a rotation is seen at once; wired as build wires it.
    rt.credentials = CredentialStore(secrets.read_secret_data, default=None, ttl=0.0)
    rt.credentials.on_replaced = rt.retire
    return rt


async def test_a_rotated_password_closes_the_old_client_and_drops_its_idle_slots() -> None:
    secrets = Secrets()
    secrets.data[("team", "zomro")] = _data("alice", "old-pass")
    rt = _runtime(secrets)
    old = await rt.credentials.get(TEAM)
    client = rt.clients.get(old)
    slot = rt.slots.get(old.fingerprint, INSTANCE)

    secrets.data[("team", "zomro")] = _data("alice", "new-pass")
    new = await rt.credentials.get(TEAM)

    assert client.closed
    assert rt.clients.get(new) is not client
    assert rt.slots.get(old.fingerprint, INSTANCE) is not slot


async def test_a_client_in_use_is_closed_only_when_its_handler_is_done() -> None:
    secrets = Secrets()
    secrets.data[("team", "zomro")] = _data("alice", "old-pass")
    rt = _runtime(secrets)
    old = await rt.credentials.get(TEAM)
    async with rt.clients.lease(old) as client:
        secrets.data[("team", "zomro")] = _data("alice", "new-pass")
        await rt.credentials.get(TEAM)
        assert not client.closed
    assert client.closed


async def test_a_slot_with_a_decision_under_way_is_kept() -> None:
    secrets = Secrets()
    secrets.data[("team", "zomro")] = _data("alice", "old-pass")
    rt = _runtime(secrets)
    old = await rt.credentials.get(TEAM)
    slot = rt.slots.get(old.fingerprint, INSTANCE)
    async with slot.lock:
        secrets.data[("team", "zomro")] = _data("alice", "new-pass")
        await rt.credentials.get(TEAM)
    assert rt.slots.get(old.fingerprint, INSTANCE) is slot


async def test_credentials_another_secret_still_holds_keep_their_client() -> None:
    secrets = Secrets()
    secrets.data[("team", "zomro")] = _data("alice", "shared")
    secrets.data[("other", "zomro")] = _data("alice", "shared")
    rt = _runtime(secrets)
    shared = await rt.credentials.get(TEAM)
    assert await rt.credentials.get(OTHER) == shared
    client = rt.clients.get(shared)

    secrets.data[("team", "zomro")] = _data("alice", "new-pass")
    await rt.credentials.get(TEAM)

    assert not client.closed
    assert rt.clients.get(shared) is client
    await rt.clients.aclose()


def test_the_runtime_the_operator_builds_retires_replaced_credentials() -> None:
    rt = Runtime.build(Settings.from_env({}), kube=cast(Kube, Secrets()))
    assert rt.credentials.on_replaced == rt.retire
