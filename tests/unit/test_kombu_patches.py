"""The kombu workaround: a lost connection no longer kills the worker while restoring."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from kombu.transport import redis as kombu_redis

from worker import kombu_patches


def _qos(client: Any) -> Any:
    @contextmanager
    def conn_or_acquire(_client: Any = None) -> Any:
        # What kombu 5.7 does once the connection info was released.
        raise AttributeError("'NoneType' object has no attribute 'hostname'")
        yield  # pragma: no cover

    channel = SimpleNamespace(connection=SimpleNamespace(client=client), conn_or_acquire=conn_or_acquire)
    return SimpleNamespace(channel=channel, _delivered={"tag": 1})


def test_restore_after_the_connection_is_gone_is_skipped_not_fatal() -> None:
    kombu_patches.apply()
    assert kombu_redis.QoS.restore_unacked is kombu_patches._restore_unacked
    assert kombu_patches._restore_unacked(_qos(client=None)) is None


def test_other_attribute_errors_still_surface() -> None:
    with pytest.raises(AttributeError):
        kombu_patches._restore_unacked(_qos(client=object()))


def test_an_ack_after_the_reconnect_on_the_old_channel_is_skipped_not_fatal() -> None:
    kombu_patches.apply()
    assert kombu_redis.QoS.ack is kombu_patches._ack

    def pipe_fails(_tag: Any) -> Any:
        # kombu 5.7: the old channel's connection is None after the reconnect.
        raise AttributeError("'NoneType' object has no attribute 'client'")

    qos = SimpleNamespace(channel=SimpleNamespace(connection=None), _remove_from_indices=pipe_fails)
    assert kombu_patches._ack(qos, "tag") is None
    live = SimpleNamespace(
        channel=SimpleNamespace(connection=SimpleNamespace(client=object())), _remove_from_indices=pipe_fails
    )
    with pytest.raises(AttributeError):
        kombu_patches._ack(live, "tag")


def test_a_kombu_version_the_patch_was_not_written_for_is_refused_at_start_up() -> None:
    before = kombu_redis.QoS.ack
    with pytest.raises(kombu_patches.UnsupportedVersion) as err:
        kombu_patches.apply(installed="5.8.0")
    message = str(err.value)
    assert "kombu 5.8.0" in message and "worker/kombu_patches.py" in message and "5.7.0" in message
    assert kombu_redis.QoS.ack is before, "nothing patched when the version is refused"


def test_the_installed_kombu_is_one_the_patch_was_written_for() -> None:
    import kombu

    # The lock pins kombu; upgrading it means reviewing the patch first (this test says so).
    assert kombu.__version__ in kombu_patches.WRITTEN_FOR
    kombu_patches.apply()
