"""Who owns a name on a store: one Lease per claimed name, with the API server as the arbiter.

Called by :mod:`chatmemory_operator.reconcile` before a memory is given anything on a server (its
names are claimed), when it is deleted (it removes only what it holds, then releases its claims),
and when a store is deleted. The backend says which names a memory needs
(:meth:`~chatmemory_operator.backends.base.Backend.claims`): its data's (a Redis key prefix, a
Kafka topic, a database) and its user's.

A claim is a ``coordination.k8s.io/v1`` Lease in the operator's namespace, named after a hash of
the store, the kind of name and the name, whose ``holderIdentity`` is the memory's UID:

- **two concurrent creates**: the API server creates a name once; the loser reads the winner;
- **prefixes** (Redis), where ``cm:a:`` and ``cm:a:b:`` conflict without being equal: after its
  create a claim lists the store's other prefix claims, and of two that overlap the older one
  (creation time, then UID) wins; the younger deletes its own Lease and reports the conflict. Both
  orders of two racing creates end with the same winner;
- **restarts**: the Leases are the record; nothing lives only in the operator's memory (a cache
  of confirmed claims saves a read per reconcile);
- **a holder that is gone** (deleted while the operator was down): its Lease is stale and is
  taken over, at the version that was read.

The Lease also says whether the object already existed on the server when the memory claimed it
(``chatmemory.io/adopted``): ``deletionPolicy: Delete`` never deletes what a memory adopted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from chatmemory_operator.backends.base import Claim
from chatmemory_operator.errors import NameConflict
from chatmemory_operator.k8s import KubeClient

PREFIX: Final = "cm-claim-"
MANAGED_BY: Final = ("app.kubernetes.io/managed-by", "chatmemory-operator")
STORE_LABEL: Final = "chatmemory.io/store"
KIND_LABEL: Final = "chatmemory.io/claim"
HOLDER_LABEL: Final = "chatmemory.io/holder"
MEMORY_ANNOTATION: Final = "chatmemory.io/memory"
VALUE_ANNOTATION: Final = "chatmemory.io/value"
ADOPTED_ANNOTATION: Final = "chatmemory.io/adopted"


@dataclass(frozen=True)
class Holder:
    """The memory that claims: its UID (the Lease's holder), namespace and name."""

    uid: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Held:
    """A claim the memory holds, and whether it adopted an object that existed before."""

    claim: Claim
    adopted: bool


def _hash(*parts: str, length: int = 40) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def lease_name(store: str, claim: Claim) -> str:
    return PREFIX + _hash(store, claim.kind, claim.value)


def store_label(store: str) -> str:
    """A store name as a label value (store names may be longer than a label's 63 characters)."""
    return _hash(store, length=32)


def _holder_uid(lease: Mapping[str, Any]) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _annotations(lease: Mapping[str, Any]) -> dict[str, str]:
    return dict((lease.get("metadata") or {}).get("annotations") or {})


def _lease_body(name: str, store: str, claim: Claim, holder: Holder, *, adopted: bool) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "labels": {
                MANAGED_BY[0]: MANAGED_BY[1],
                STORE_LABEL: store_label(store),
                KIND_LABEL: claim.kind,
                HOLDER_LABEL: holder.uid,
            },
            "annotations": {
                MEMORY_ANNOTATION: f"{holder.namespace}/{holder.name}",
                VALUE_ANNOTATION: claim.value,
                ADOPTED_ANNOTATION: str(adopted).lower(),
                "chatmemory.io/store-name": store,
            },
        },
        "spec": {"holderIdentity": holder.uid},
    }


class Claims:
    """Claims on the names of one operator: Leases in ``namespace``. Thread-safe (the cache is a
    set updated by single operations)."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self._kube = kube
        self.namespace = namespace
        self._confirmed: set[tuple[str, str]] = set()  # (lease name, holder uid) known to be held

    def claim(
        self,
        store: str,
        claim: Claim,
        holder: Holder,
        *,
        existed: Callable[[], bool],
        adoption: bool,
        overlap: bool = True,
    ) -> Held:
        """Hold ``claim`` for ``holder`` or raise :class:`NameConflict` naming the memory's field.

        ``existed`` is asked (server I/O) only before a first claim of a name the memory set
        itself: an object that is there already is adopted when ``adoption`` allows, else refused.
        ``overlap``: check a prefix claim against the store's other prefixes (a list of them); the
        caller may skip it where only derived names exist, which never overlap each other.
        """
        name = lease_name(store, claim)
        lease = self._kube.get_lease(self.namespace, name)
        if lease is not None and _holder_uid(lease) == holder.uid:
            self._confirmed.add((name, holder.uid))
            return Held(claim, _annotations(lease).get(ADOPTED_ANNOTATION) == "true")
        if lease is not None:
            if self._alive(lease):
                raise self._conflict(store, claim)
            self._kube.delete_lease(self.namespace, name, lease["metadata"].get("resourceVersion"))
        if claim.prefix and overlap:
            self._refuse_overlap(store, claim, holder, mine=None)
        adopted = bool(claim.field) and existed()
        if adopted and not adoption:
            raise NameConflict(
                f"{claim.describe()} names data that already exists on store {store!r} and was not created "
                "for this memory: choose another name, or ask the store's owner for spec.adoption: Allow"
            )
        created = self._kube.create_lease(
            self.namespace, _lease_body(name, store, claim, holder, adopted=adopted)
        )
        if created is None:  # a concurrent claim won the create
            raise self._conflict(store, claim)
        if claim.prefix and overlap:
            self._refuse_overlap(store, claim, holder, mine=created)
        self._confirmed.add((name, holder.uid))
        return Held(claim, adopted)

    def confirmed(self, store: str, claims: Iterable[Claim], uid: str) -> bool:
        """Whether this process already saw every claim held by ``uid`` (no read needed)."""
        return all((lease_name(store, c), uid) in self._confirmed for c in claims)

    def held(self, store: str, claims: Iterable[Claim], uid: str) -> dict[Claim, Held | None]:
        """Which of ``claims`` ``uid`` holds (None: another memory holds it, or nobody does)."""
        return self.holdings(store, claims, uid)[0]

    def holdings(
        self, store: str, claims: Iterable[Claim], uid: str
    ) -> tuple[dict[Claim, Held | None], bool]:
        """:meth:`held`, and whether nobody holds any of ``claims`` (a memory provisioned before
        claims existed), from one read of each Lease."""
        out: dict[Claim, Held | None] = {}
        nobody = True
        for claim in claims:
            lease = self._kube.get_lease(self.namespace, lease_name(store, claim))
            nobody = nobody and lease is None
            mine = lease is not None and _holder_uid(lease) == uid
            adopted = mine and _annotations(lease or {}).get(ADOPTED_ANNOTATION) == "true"
            out[claim] = Held(claim, adopted) if mine else None
        return out, nobody

    def release(self, uid: str) -> None:
        """Drop every claim ``uid`` holds (its memory is deleted)."""
        for lease in self._kube.list_leases(self.namespace, f"{HOLDER_LABEL}={uid}"):
            self._kube.delete_lease(
                self.namespace, lease["metadata"]["name"], lease["metadata"].get("resourceVersion")
            )
        self._confirmed = {c for c in self._confirmed if c[1] != uid}

    # -- helpers ----------------------------------------------------------------------------------

    def _alive(self, lease: Mapping[str, Any]) -> bool:
        """Whether the memory that holds ``lease`` still exists (the same UID, not just the name)."""
        namespace, _, name = _annotations(lease).get(MEMORY_ANNOTATION, "/").partition("/")
        memory = self._kube.get_memory(namespace, name) if namespace and name else None
        return memory is not None and (memory.get("metadata") or {}).get("uid") == _holder_uid(lease)

    def _refuse_overlap(
        self, store: str, claim: Claim, holder: Holder, *, mine: Mapping[str, Any] | None
    ) -> None:
        """Raise when a live claim of another memory overlaps ``claim`` (one value starts with the
        other) and wins: before our create any such claim wins; after it, the older one."""
        selector = f"{STORE_LABEL}={store_label(store)},{KIND_LABEL}={claim.kind}"
        for lease in self._kube.list_leases(self.namespace, selector):
            other = _annotations(lease).get(VALUE_ANNOTATION, "")
            if _holder_uid(lease) == holder.uid or not (
                other.startswith(claim.value) or claim.value.startswith(other)
            ):
                continue
            if mine is not None and _order(mine) < _order(lease):
                continue  # ours is older: the other claim loses when it checks
            if not self._alive(lease):
                continue
            if mine is not None:
                self._kube.delete_lease(
                    self.namespace, mine["metadata"]["name"], mine["metadata"].get("resourceVersion")
                )
            raise NameConflict(
                f"{claim.describe()} overlaps the key prefix of another ChatMemory on store {store!r} "
                "(one is a prefix of the other): choose a prefix that does not overlap another"
            )

    @staticmethod
    def _conflict(store: str, claim: Claim) -> NameConflict:
        return NameConflict(
            f"{claim.describe()} is already used by another ChatMemory on store {store!r}: "
            "choose another name"
        )


def _order(lease: Mapping[str, Any]) -> tuple[str, str]:
    """Which of two claims is older: creation time (RFC 3339, whole seconds), then holder UID."""
    return str((lease.get("metadata") or {}).get("creationTimestamp") or ""), _holder_uid(lease)
