"""When a Kafka turn refused by authorization may be sent again (issue 15): the decision alone.

:meth:`KafkaClients.refused` allows a resend on a new producer (a new producer id, so the idempotent
producer cannot deduplicate it) only when no connection was dropped while the turn was outstanding.
librdkafka reports a dropped connection through ``error_cb`` with several codes; the ones that may
leave an earlier attempt appended (a ProduceRequest written, its answer lost) must all block the
resend. No sockets: building the clients does no I/O, and the reports are fed in by hand.
"""

from __future__ import annotations

import confluent_kafka as ck
import pytest
from chatmemory.errors import BackendError
from chatmemory.histories._kafka_clients import Delivery, KafkaClients

E = ck.KafkaError
TOPIC = "cm-resend"


def clients() -> KafkaClients:
    return KafkaClients({"bootstrap.servers": "127.0.0.1:9"}, group_prefix="cm-test", may_create=False)


def refused_turn(kc: KafkaClients, *, dropped: ck.KafkaError | None, count: int = 2) -> Delivery:
    """A turn of ``count`` messages queued, then (optionally) a connection dropped with ``dropped``,
    then every message refused with TOPIC_AUTHORIZATION_FAILED."""
    delivery = Delivery(count, losses=kc._losses)
    if dropped is not None:
        kc._on_error(dropped)
    for _ in range(count):
        delivery(E(E.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed"), None)
    return delivery


def test_a_turn_refused_whole_with_no_connection_dropped_may_be_sent_again() -> None:
    kc = clients()
    assert kc.refused(refused_turn(kc, dropped=None))


def test_an_authentication_failure_alone_does_not_block_the_resend() -> None:
    kc = clients()
    assert kc.refused(refused_turn(kc, dropped=E(E._AUTHENTICATION, "SASL authentication failed")))


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        pytest.param("_TIMED_OUT", "1 request(s) timed out: disconnect (average rtt 0.5ms)", id="_TIMED_OUT"),
        pytest.param("_TRANSPORT", "Disconnected (after 1200ms in state UP)", id="_TRANSPORT"),
        pytest.param("_ALL_BROKERS_DOWN", "1/1 brokers are down", id="_ALL_BROKERS_DOWN"),
        pytest.param("_DESTROY_BROKER", "Broker handle is terminating", id="_DESTROY_BROKER"),
        pytest.param("REQUEST_TIMED_OUT", "Broker: Request timed out", id="REQUEST_TIMED_OUT"),
        pytest.param("NETWORK_EXCEPTION", "Broker: Network exception", id="NETWORK_EXCEPTION"),
        pytest.param("_MSG_TIMED_OUT", "Local: Message timed out", id="_MSG_TIMED_OUT"),
    ],
)
def test_a_turn_refused_after_a_dropped_or_timed_out_connection_is_not_sent_again(
    code: str, reason: str
) -> None:
    kc = clients()
    assert not kc.refused(refused_turn(kc, dropped=E(getattr(E, code), reason)))


def test_a_turn_not_sent_again_says_it_may_have_been_applied() -> None:
    kc = clients()
    delivery = refused_turn(kc, dropped=E(E._TIMED_OUT, "1 request(s) timed out: disconnect"))
    assert not kc.refused(delivery)
    with pytest.raises(BackendError, match="may have been applied") as err:
        kc.check(delivery, TOPIC, 0)
    assert "authorization failed" in str(err.value).lower()


def test_a_turn_refused_with_no_connection_dropped_says_nothing_was_applied_twice() -> None:
    kc = clients()
    delivery = refused_turn(kc, dropped=None)
    with pytest.raises(BackendError) as err:
        kc.check(delivery, TOPIC, 0)
    assert "may have been applied" not in str(err.value)
