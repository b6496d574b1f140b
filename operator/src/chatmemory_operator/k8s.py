"""The only module that calls the Kubernetes API (kopf's own watches and patches aside).

Used by :mod:`chatmemory_operator.reconcile` (stores, admin and CA Secrets, memory Secrets) and by
:mod:`chatmemory_operator.handlers` (memories that reference a store). The official ``kubernetes``
client is synchronous: callers run these methods in a worker thread. Objects come back as plain
camelCase dicts, as kopf hands them to handlers, so the rest of the operator sees one shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from chatmemory_operator.api.v1alpha1 import (
    GROUP,
    MEMORY_PLURAL,
    STORE_PLURAL,
    VERSION,
    is_default_store,
)
from chatmemory_operator.secrets import decode_data

log = logging.getLogger(__name__)

_LEASES_ALL = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_LEASES = _LEASES_ALL + "/{name}"


def _precondition(resource_version: str | None) -> dict[str, Any] | None:
    """DeleteOptions that delete only the version the caller read (None: any version)."""
    if not resource_version:
        return None
    return {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"resourceVersion": resource_version},
    }


class KubernetesError(Exception):
    """An API call failed for a reason other than "not found" (retried by the caller)."""


#: Seconds a Lease call may take unless its caller says otherwise (leader election says less).
LEASE_TIMEOUT: Final = 10.0


def _bounded(fn: Callable[[], Any], what: str) -> Any:
    """``fn()``, with a timed-out or broken connection (urllib3's errors, not an API reply) as a
    :class:`KubernetesError` naming the call."""
    try:
        return fn()
    except urllib3.exceptions.HTTPError as e:
        raise KubernetesError(f"{what}: {e}") from None


def load_api_client() -> kubernetes.client.ApiClient:
    """An API client from ``KUBECONFIG`` / ``~/.kube/config``, or the in-cluster service account."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()


def lease_client() -> KubeClient:
    """A client of its own for leader election (after :func:`load_api_client`): its renewals never
    wait behind the reconciles' calls, and it makes one attempt per call (the shared client retries
    a timed-out request 3 times, so a 0.5 s timeout took 2 s), so a call's ``timeout`` bounds it."""
    configuration = kubernetes.client.Configuration.get_default_copy()
    configuration.retries = False
    return KubeClient(kubernetes.client.ApiClient(configuration))


class KubeClient:
    """Reads and writes the few objects the operator needs. Thread-safe."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self._api = api_client
        # Secrets go through the ApiClient itself: the generated CoreV1Api module alone costs
        # ~70 MB of memory (measured), for the four Secret calls the operator makes.
        self._custom = kubernetes.client.CustomObjectsApi(api_client)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    # -- stores -----------------------------------------------------------------------------------

    def get_store(self, name: str) -> dict[str, Any] | None:
        """A ChatMemoryStore by name, or None when it does not exist."""
        store: dict[str, Any] | None = self._get(
            lambda: self._custom.get_cluster_custom_object(GROUP, VERSION, STORE_PLURAL, name),
            f"ChatMemoryStore {name!r}",
        )
        return store

    def list_stores(self) -> list[dict[str, Any]]:
        result = self._call(
            lambda: self._custom.list_cluster_custom_object(GROUP, VERSION, STORE_PLURAL),
            "listing ChatMemoryStores",
        )
        return list(result.get("items") or [])

    def default_store(self) -> dict[str, Any] | None:
        """The store annotated ``chatmemory.io/is-default-store: "true"`` (the newest if several,
        as Kubernetes does for default StorageClasses), or None."""
        defaults = [s for s in self.list_stores() if is_default_store(s)]
        if not defaults:
            return None
        return max(defaults, key=lambda s: (s.get("metadata") or {}).get("creationTimestamp") or "")

    # -- memories ---------------------------------------------------------------------------------

    def list_memories(self) -> list[dict[str, Any]]:
        """Every ChatMemory in every namespace the operator can see."""
        result = self._call(
            lambda: self._custom.list_cluster_custom_object(GROUP, VERSION, MEMORY_PLURAL),
            "listing ChatMemories",
        )
        return list(result.get("items") or [])

    def annotate_memory(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        """Merge-patch annotations onto a ChatMemory (gone already: ignored)."""
        body = {"metadata": {"annotations": dict(annotations)}}
        self._get(
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, MEMORY_PLURAL, name, body
            ),
            f"ChatMemory {namespace}/{name}",
        )

    def get_memory(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ChatMemory by namespace and name, or None when it does not exist."""
        memory: dict[str, Any] | None = self._get(
            lambda: self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, MEMORY_PLURAL, name),
            f"ChatMemory {namespace}/{name}",
        )
        return memory

    def patch_memory_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch a ChatMemory's status subresource (gone already: ignored)."""
        body = {"status": dict(status)}
        self._get(
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, MEMORY_PLURAL, name, body
            ),
            f"ChatMemory {namespace}/{name}",
        )

    # -- secrets ----------------------------------------------------------------------------------

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret as a dict (``data`` still base64), or None."""
        obj = self._get(lambda: self._secrets("GET", namespace, name), f"Secret {namespace}/{name}")
        return None if obj is None else dict(obj)

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data decoded to text, or None when the Secret does not exist."""
        secret = self.read_secret(namespace, name)
        return None if secret is None else decode_data(secret.get("data"))

    def write_secret(self, body: Mapping[str, Any], existing: Mapping[str, Any] | None) -> None:
        """Create the Secret, or replace ``existing`` (the version the caller read and checked);
        a Secret whose ``type`` differs is deleted and recreated (the type is immutable).

        Never replaces a Secret the caller did not read: a create that finds one created meanwhile,
        or a replace that finds it changed since (the resourceVersion precondition), fails with a
        :class:`KubernetesError`, and the next reconcile reads and checks it again.
        """
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        what = f"Secret {namespace}/{name}"
        version = ((existing or {}).get("metadata") or {}).get("resourceVersion")
        if existing is not None and existing.get("type") != body.get("type"):
            self._call(lambda: self._secrets("DELETE", namespace, name, body=_precondition(version)), what)
            existing = None
        if existing is None:
            self._call(lambda: self._secrets("POST", namespace, body=body), f"while creating {what}")
            return
        replaced = {**body, "metadata": {**meta, "resourceVersion": version}}
        self._call(lambda: self._secrets("PUT", namespace, name, body=replaced), f"while replacing {what}")

    def delete_secret(self, namespace: str, name: str) -> None:
        """Delete a Secret; already gone is fine."""
        self._get(lambda: self._secrets("DELETE", namespace, name), f"Secret {namespace}/{name}")

    # -- leases (name claims, leader election) and namespaces ------------------------------------
    # Every Lease call is bounded (``timeout``, seconds, the whole request): a call that hangs ends
    # as a KubernetesError instead of holding its thread, or a standby's wait, forever.

    def get_lease(
        self, namespace: str, name: str, *, timeout: float = LEASE_TIMEOUT
    ) -> dict[str, Any] | None:
        what = f"Lease {namespace}/{name}"
        lease: dict[str, Any] | None = self._get(
            lambda: _bounded(
                lambda: self._request(
                    "GET", _LEASES, {"namespace": namespace, "name": name}, timeout=timeout
                ),
                f"while reading {what}",
            ),
            what,
        )
        return lease

    def create_lease(
        self, namespace: str, body: Mapping[str, Any], *, timeout: float = LEASE_TIMEOUT
    ) -> dict[str, Any] | None:
        """Create a Lease; None when one of that name exists already (409: another holder won)."""
        what = f"while creating Lease {namespace}/{body['metadata']['name']}"
        try:
            created: dict[str, Any] = _bounded(
                lambda: self._request(
                    "POST", _LEASES_ALL, {"namespace": namespace}, body=body, timeout=timeout
                ),
                what,
            )
        except ApiException as e:
            if e.status == 409:
                return None
            raise KubernetesError(f"{what}: {e.status} {e.reason}") from None
        return created

    def replace_lease(
        self, namespace: str, body: Mapping[str, Any], *, timeout: float = LEASE_TIMEOUT
    ) -> dict[str, Any] | None:
        """Replace a Lease at the ``metadata.resourceVersion`` in ``body`` (the version the caller
        read); None when it changed or went since (409, 404: another writer came first)."""
        name = body["metadata"]["name"]
        what = f"while replacing Lease {namespace}/{name}"
        try:
            replaced: dict[str, Any] = _bounded(
                lambda: self._request(
                    "PUT", _LEASES, {"namespace": namespace, "name": name}, body=body, timeout=timeout
                ),
                what,
            )
        except ApiException as e:
            if e.status in (404, 409):
                return None
            raise KubernetesError(f"{what}: {e.status} {e.reason}") from None
        return replaced

    def list_leases(
        self, namespace: str, selector: str, *, timeout: float = LEASE_TIMEOUT
    ) -> list[dict[str, Any]]:
        what = f"listing Leases in {namespace}"
        result = self._call(
            lambda: _bounded(
                lambda: self._request(
                    "GET",
                    _LEASES_ALL,
                    {"namespace": namespace},
                    query={"labelSelector": selector},
                    timeout=timeout,
                ),
                what,
            ),
            what,
        )
        return list(result.get("items") or [])

    def delete_lease(
        self,
        namespace: str,
        name: str,
        resource_version: str | None = None,
        *,
        timeout: float = LEASE_TIMEOUT,
    ) -> None:
        """Delete a Lease (only at ``resource_version`` when given); already gone is fine."""
        what = f"Lease {namespace}/{name}"
        self._get(
            lambda: _bounded(
                lambda: self._request(
                    "DELETE",
                    _LEASES,
                    {"namespace": namespace, "name": name},
                    body=_precondition(resource_version),
                    timeout=timeout,
                ),
                f"while deleting {what}",
            ),
            what,
        )

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels, or None when it does not exist."""
        ns = self._get(
            lambda: self._request("GET", "/api/v1/namespaces/{name}", {"name": name}), f"Namespace {name}"
        )
        return None if ns is None else dict((ns.get("metadata") or {}).get("labels") or {})

    # -- helpers ----------------------------------------------------------------------------------

    def _secrets(
        self, method: str, namespace: str, name: str = "", *, body: Mapping[str, Any] | None = None
    ) -> Any:
        """One call on ``/api/v1/namespaces/{namespace}/secrets[/{name}]``; the reply as a dict."""
        path = "/api/v1/namespaces/{namespace}/secrets" + ("/{name}" if name else "")
        params = {"namespace": namespace, **({"name": name} if name else {})}
        return self._request(method, path, params, body=body)

    def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One call through the ApiClient itself (the generated API modules cost memory); ``timeout``
        bounds the whole request (None: unbounded)."""
        api = self._api
        request = api.param_serialize(
            method,
            path,
            path_params=dict(params),
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        response = api.call_api(*request, _request_timeout=timeout)
        response.read()  # type: ignore[no-untyped-call]
        types = {"200": "object", "201": "object", "202": "object"}
        return api.response_deserialize(response, types).data  # raises ApiException unless 2xx

    @staticmethod
    def _get(fn: Any, what: str) -> Any:
        try:
            return fn()
        except ApiException as e:
            if e.status == 404:
                return None
            raise KubernetesError(f"while reading {what}: {e.status} {e.reason}") from None

    @staticmethod
    def _call(fn: Any, what: str) -> Any:
        try:
            return fn()
        except ApiException as e:
            raise KubernetesError(f"{what}: {e.status} {e.reason}") from None
