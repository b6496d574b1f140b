"""Proof that the local Kafka broker (KRaft) is real: topics, keyed messages, SCRAM users and ACLs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from tests.support.kafka import poll_one
from tests.support.platform import Platform


def sasl(platform: Platform, user: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": platform["KAFKA_SASL_BOOTSTRAP"],
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": platform["KAFKA_SASL_MECHANISM"],
        "sasl.username": user,
        "sasl.password": password,
    }


def admin_conf(platform: Platform) -> dict[str, Any]:
    return sasl(platform, platform["KAFKA_ADMIN_USER"], platform["KAFKA_ADMIN_PASSWORD"])


def create_topic(conf: dict[str, Any], topic: str) -> None:
    admin = AdminClient(conf)  # must outlive the future, or librdkafka destroys the handle first
    admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=10)[topic].result(timeout=30)


def round_trip(conf: dict[str, Any], topic: str, key: bytes, value: bytes) -> tuple[bytes, bytes]:
    errors: list[KafkaError] = []
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, _msg: err and errors.append(err))
    assert producer.flush(30) == 0
    assert not errors, errors
    consumer = Consumer({**conf, "group.id": f"check-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        msg = poll_one(consumer, 30)
    finally:
        consumer.close()
    if msg is None:
        pytest.fail(f"no message read back from {topic}")
    return msg.key(), msg.value()


@pytest.mark.parametrize("listener", ["plaintext", "sasl"])
def test_topic_created_and_keyed_message_round_trips(platform: Platform, listener: str) -> None:
    conf = (
        {"bootstrap.servers": platform["KAFKA_BOOTSTRAP"]}
        if listener == "plaintext"
        else admin_conf(platform)
    )
    topic = f"platform-{listener}-{uuid.uuid4().hex[:8]}"
    create_topic(conf, topic)
    assert round_trip(conf, topic, b"session-1", b'{"hello": "world"}') == (
        b"session-1",
        b'{"hello": "world"}',
    )


def test_scram_user_with_an_acl_is_denied_another_topic(platform: Platform) -> None:
    admin = AdminClient(admin_conf(platform))
    allowed, other = f"platform-allowed-{uuid.uuid4().hex[:8]}", f"platform-other-{uuid.uuid4().hex[:8]}"
    create_topic(admin_conf(platform), allowed)
    create_topic(admin_conf(platform), other)
    user, password = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    mechanism = ScramMechanism[platform["KAFKA_SASL_MECHANISM"].replace("-", "_")]
    for f in admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, 4096), password.encode())]
    ).values():
        f.result(timeout=30)
    acls = [
        AclBinding(
            ResourceType.TOPIC,
            allowed,
            ResourcePatternType.LITERAL,
            f"User:{user}",
            "*",
            op,
            AclPermissionType.ALLOW,
        )
        for op in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)
    ]
    for f in admin.create_acls(acls).values():
        f.result(timeout=30)
    try:
        check_allowed_and_denied(sasl(platform, user, password), allowed, other)
    finally:  # leave the shared broker as it was: no stray users, ACLs or topics
        user_filter = AclBindingFilter(
            ResourceType.TOPIC,
            allowed,
            ResourcePatternType.LITERAL,
            f"User:{user}",
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        for f in admin.delete_acls([user_filter]).values():
            f.result(timeout=30)
        for f in admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, mechanism)]).values():
            f.result(timeout=30)
        for f in admin.delete_topics([allowed, other], operation_timeout=10).values():
            f.result(timeout=30)


def check_allowed_and_denied(conf: dict[str, Any], allowed: str, other: str) -> None:
    # New users and ACLs reach the broker asynchronously: retry the allowed write briefly.
    deadline = time.monotonic() + 30
    errors: list[KafkaError] = []
    while True:
        errors.clear()
        producer = Producer({**conf, "message.timeout.ms": 5000})
        producer.produce(allowed, value=b"ok", on_delivery=lambda err, _m: err and errors.append(err))
        producer.flush(10)
        if not errors or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not errors, f"the user could not write its own topic: {errors}"

    denied: list[KafkaError] = []
    producer = Producer({**conf, "message.timeout.ms": 5000})
    producer.produce(other, value=b"no", on_delivery=lambda err, _m: err and denied.append(err))
    producer.flush(10)
    assert denied and denied[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
