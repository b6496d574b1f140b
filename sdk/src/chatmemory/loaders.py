"""Find a ChatMemory's binding: a mounted Secret, environment variables, or the Kubernetes API.

Called by :func:`chatmemory.connect` (through :func:`load_binding`); applications rarely call it
directly. Sources are tried in this order and the first that *exists* wins; a binding that exists
but is malformed raises at once (it never falls through to the next source):

1. **A mounted Secret directory**: ``path=``, else ``$SERVICE_BINDING_ROOT/<name>`` (the Service
   Binding spec's layout, one file per key). With no ``name`` and exactly one binding under
   ``$SERVICE_BINDING_ROOT``, that one is used.
2. **Environment variables**: ``CHATMEMORY_<KEY>``, the key upper-cased with ``.`` turned into ``_``
   (``CHATMEMORY_TYPE``, ``CHATMEMORY_HOST``, ``CHATMEMORY_KEY_PREFIX``, ``CHATMEMORY_CA_CRT``). With
   a ``name``, ``CHATMEMORY_<NAME>_<KEY>`` is tried first (``support-bot`` -> ``SUPPORT_BOT``). A
   prefix exists when its ``TYPE`` variable is set.
3. **The Kubernetes API** (``pip install 'chatmemory[kubernetes]'``; in-cluster service account or
   ``KUBECONFIG``): the Secret ``<name>-chatmemory``, or the Secret the ChatMemory ``<name>`` names
   in ``status.binding.name``, in ``namespace`` (default: the pod's namespace, else the kubeconfig
   context's, else ``default``). Needs ``name``.

Every error is a :class:`~chatmemory.errors.BindingError` naming the key and the source
(``dir:/bindings/support-bot``, ``env:CHATMEMORY_``, ``secret:ns/name``);
:class:`~chatmemory.errors.BindingNotFound` lists every place that was searched. Loading never
writes anything.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from chatmemory.contract import Binding, Key
from chatmemory.errors import BindingError, BindingNotFound

ENV_PREFIX: Final = "CHATMEMORY_"
SERVICE_BINDING_ROOT: Final = "SERVICE_BINDING_ROOT"
SECRET_SUFFIX: Final = "-chatmemory"
POD_NAMESPACE_FILE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CRD_GROUP: Final = "chatmemory.io"
CRD_VERSION: Final = "v1alpha1"
CRD_PLURAL: Final = "chatmemories"


def env_name(key: Key | str, prefix: str = ENV_PREFIX) -> str:
    """The environment variable for a binding key: ``ca.crt`` -> ``CHATMEMORY_CA_CRT``."""
    return prefix + re.sub(r"[^A-Za-z0-9]", "_", str(key)).upper()


def env_prefix(name: str | None) -> str:
    """``CHATMEMORY_`` or, for a named binding, ``CHATMEMORY_<NAME>_``."""
    if not name:
        return ENV_PREFIX
    return f"{ENV_PREFIX}{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_"


def load_binding(
    name: str | None = None, *, path: str | os.PathLike[str] | None = None, namespace: str | None = None
) -> tuple[Binding, str]:
    """The binding and where it was read from (``dir:...``, ``env:...`` or ``secret:ns/name``)."""
    searched: list[str] = []

    found = _from_directory(name, path, searched)
    if found is not None:
        return found
    if path is not None:  # an explicit path that does not exist is an error, not a fallback
        raise BindingNotFound(f"no binding directory at {path}", source=f"dir:{path}")

    prefixes = [env_prefix(name), ENV_PREFIX] if name else [ENV_PREFIX]
    for prefix in prefixes:
        source = f"env:{prefix}"
        if env_name(Key.TYPE, prefix) in os.environ:
            data = {
                k.value: os.environ[env_name(k, prefix)] for k in Key if env_name(k, prefix) in os.environ
            }
            return Binding.from_mapping(data, source=source), source
        searched.append(f"{source}* ({env_name(Key.TYPE, prefix)} is not set)")

    found = _from_kubernetes(name, namespace, searched)
    if found is not None:
        return found
    what = f"binding {name!r}" if name else "a binding"
    err = BindingNotFound(f"no {what} found; searched: " + "; ".join(searched))
    err.source = "; ".join(searched)
    raise err


#: Seconds a re-read binding is trusted before a new connection reads its source again.
RELOAD_INTERVAL: Final = 2.0


class BindingSource:
    """Reads a memory's binding again from where it came from (a mounted Secret directory or the
    Kubernetes API), at most every ``interval`` seconds: the credentials a new connection uses.

    Clients ask it on each new connection (redis-py's credential provider, the MySQL pools'
    opener), so a rotated password reaches them once the kubelet has updated the mounted Secret,
    without a restart. A failed read keeps the last good binding. Thread-safe.

    :meth:`credentials` may read (a file, or an HTTP call to the Kubernetes API) in the caller's
    thread, holding a lock; :meth:`refresh` never does. So asyncio clients call :meth:`credentials`
    in a thread (``asyncio.to_thread``) and may call :meth:`refresh` on the loop.
    """

    def __init__(
        self, load: Callable[[], Binding], first: Binding, *, interval: float = RELOAD_INTERVAL
    ) -> None:
        self._load = load
        self._binding = first
        self._read_at = time.monotonic()
        self.interval = interval
        self._lock = threading.Lock()

    def latest(self) -> Binding:
        with self._lock:
            if time.monotonic() - self._read_at >= self.interval:
                self._read_at = time.monotonic()
                with contextlib.suppress(BindingError, OSError):  # else the last good one, tried again later
                    self._binding = self._load()
            return self._binding

    def credentials(self) -> tuple[str, str]:
        b = self.latest()
        return b.username, b.password

    def refresh(self) -> None:
        """The server refused the credentials: read the source again at the next :meth:`credentials`
        (not now: this only marks the binding stale, so it is safe on an event loop).

        Without the lock, which a read in another thread may hold for as long as the read takes: one
        attribute store is atomic, and a read already under way reads the Secret after this anyway.
        """
        self._read_at = float("-inf")


def read_directory(directory: Path) -> dict[str, str]:
    """Every visible file of a mounted Secret as text (Kubernetes' ``..data`` links are skipped).

    The kubelet updates a Secret volume by swapping the ``..data`` link to a new timestamped
    directory at once; the files are read from the directory that link names, so a read never
    mixes two versions (a user name of one rotation with the password of another).
    """
    data = directory / "..data"
    if data.is_symlink():
        try:
            return _read_files(data.resolve(strict=True), directory)
        except (OSError, BindingError):
            return _read_files(data.resolve(strict=True), directory)  # swapped while reading: once more
    return _read_files(directory, directory)


def _read_files(snapshot: Path, directory: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in sorted(snapshot.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            out[entry.name] = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BindingError(
                f"key {entry.name!r} cannot be read: {e}", key=entry.name, source=f"dir:{directory}"
            ) from e
    return out


def decode_secret_data(data: Mapping[str, str] | None, source: str) -> dict[str, str]:
    """A Secret's base64 ``data`` to text values."""
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as e:
            raise BindingError(f"key {key!r} is not valid base64 UTF-8 text", key=key, source=source) from e
    return out


def _from_directory(
    name: str | None, path: str | os.PathLike[str] | None, searched: list[str]
) -> tuple[Binding, str] | None:
    candidate: Path | None = None
    if path is not None:
        candidate = Path(path)
    else:
        root = os.environ.get(SERVICE_BINDING_ROOT)
        if not root:
            searched.append(f"${SERVICE_BINDING_ROOT} (not set)")
            return None
        root_path = Path(root)
        if name:
            candidate = root_path / name
        else:
            subdirs = (
                sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith("."))
                if root_path.is_dir()
                else []
            )
            if len(subdirs) > 1:
                names = ", ".join(p.name for p in subdirs)
                raise BindingError(
                    f"{len(subdirs)} bindings under {root_path} ({names}): pass the name of one",
                    source=f"dir:{root_path}",
                )
            candidate = subdirs[0] if subdirs else None
        if candidate is None:
            searched.append(f"dir:{root_path}/* (no binding)")
            return None
    if candidate is None or not candidate.is_dir():
        searched.append(f"dir:{candidate} (missing)")
        return None
    source = f"dir:{candidate}"
    return Binding.from_mapping(read_directory(candidate), source=source), source


def _from_kubernetes(
    name: str | None, namespace: str | None, searched: list[str]
) -> tuple[Binding, str] | None:
    if not name:
        searched.append("kubernetes API (needs a binding name)")
        return None
    try:
        import kubernetes
        from kubernetes.client.exceptions import ApiException
    except ImportError:
        searched.append("kubernetes API (not installed: pip install 'chatmemory[kubernetes]')")
        return None
    api, context_namespace = _kube_client(kubernetes)
    if api is None:
        searched.append("kubernetes API (not in a cluster and no KUBECONFIG or ~/.kube/config)")
        return None
    ns = namespace or context_namespace
    core = kubernetes.client.CoreV1Api(api)
    try:
        secret_name = f"{name}{SECRET_SUFFIX}"
        source = f"secret:{ns}/{secret_name}"
        secret = _get_or_none(ApiException, lambda: core.read_namespaced_secret(secret_name, ns), source)
        if secret is not None:
            return Binding.from_mapping(decode_secret_data(secret.data, source), source=source), source
        searched.append(f"{source} (not found)")
        custom = kubernetes.client.CustomObjectsApi(api)
        cr_source = f"chatmemory:{ns}/{name}"
        memory: Any = _get_or_none(
            ApiException,
            lambda: custom.get_namespaced_custom_object(CRD_GROUP, CRD_VERSION, ns, CRD_PLURAL, name),
            cr_source,
        )
        if memory is None:
            searched.append(f"{cr_source} (not found)")
            return None
        bound = ((memory.get("status") or {}).get("binding") or {}).get("name")
        if not bound:
            searched.append(f"{cr_source} (no status.binding.name yet: is the memory ready?)")
            return None
        source = f"secret:{ns}/{bound}"
        secret = _get_or_none(ApiException, lambda: core.read_namespaced_secret(bound, ns), source)
        if secret is None:
            searched.append(f"{source} (named by {cr_source}, not found)")
            return None
        return Binding.from_mapping(decode_secret_data(secret.data, source), source=source), source
    finally:
        api.close()


def _get_or_none(api_exception: type[Exception], call: Any, source: str) -> Any:
    try:
        return call()
    except api_exception as e:
        status = getattr(e, "status", None)
        if status == 404:
            return None
        reason = getattr(e, "reason", "") or str(e)
        raise BindingError(f"the Kubernetes API refused the read: {status} {reason}", source=source) from e


def _kube_client(kubernetes: Any) -> tuple[Any, str]:
    """(ApiClient or None, default namespace): in-cluster first, then the kubeconfig."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config = kubernetes.client.Configuration()
            kubernetes.config.load_incluster_config(client_configuration=config)
            ns = POD_NAMESPACE_FILE.read_text().strip() if POD_NAMESPACE_FILE.is_file() else "default"
            return kubernetes.client.ApiClient(configuration=config), ns
        except kubernetes.config.ConfigException:
            pass
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    first = kubeconfig.split(os.pathsep)[0]
    if not Path(first).is_file():
        return None, "default"
    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=first)
        ns = (active or {}).get("context", {}).get("namespace") or "default"
        return kubernetes.config.new_client_from_config(config_file=first), ns
    except kubernetes.config.ConfigException as e:
        raise BindingError(f"the kubeconfig cannot be used: {e}", source=f"kubeconfig:{first}") from e


__all__ = ["ENV_PREFIX", "decode_secret_data", "env_name", "env_prefix", "load_binding", "read_directory"]
