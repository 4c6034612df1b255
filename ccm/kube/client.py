"""The Kubernetes API client of ccm: raw JSON in, plain dicts out.

kubernetes_asyncio does what it is good at (kubeconfig and in-cluster configuration, client
certificates, bearer tokens, exec credential plugins, the TLS context and the aiohttp session);
every request and response body is read and written here with orjson, never through the
generated models (their deserialisation blocks the event loop at scale). Ports the parts of
client-go's ``rest`` package and ``tools/pager`` ccm needs: QPS/burst throttling
(``flowcontrol``), ``Retry-After`` retries, error translation
(``k8s.io/apimachinery/pkg/api/errors``), paged lists, watches, and the ``rest_client_*`` metrics.

Layers::

    KubeClient          paths, verbs, throttling, retries, error translation, counters
      └── Transport     sends one HTTP request (ABC)
            ├── AiohttpTransport   kubernetes_asyncio configuration + aiohttp (KubeClient.connect)
            └── ccm.kube.fake.FakeApiServer   in-memory apiserver for unit tests

Errors: an HTTP error status raises the :class:`ccm.errors.ApiError` subclass for its ``Status``
(404 → ``NotFoundError``, 409 → ``ConflictError``/``AlreadyExistsError``, 410 → ``GoneError`` …); an
unreachable apiserver, a timeout or a malformed response raises :class:`ccm.errors.KubeError`; a bad
kubeconfig raises :class:`ccm.errors.ConfigError` (one line: path and reason).

kubernetes_asyncio is imported lazily by :meth:`KubeClient.connect`, and only its configuration
loaders and REST object (:mod:`ccm.kube.leanimport`): its package ``__init__`` would load every
generated API class and model (~37 MiB resident), which ccm never uses.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import collections
import contextlib
import copy
import dataclasses
import logging
import os
import re
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import quote, urlsplit

import orjson

from ccm import clock, dryrun, errors, fencing, metrics
from ccm.kube import leanimport, ratelimit

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "CONFIGMAPS",
    "ENDPOINTS",
    "EVENTS",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "SECRETS",
    "SERVICEACCOUNTS",
    "SERVICES",
    "SUBJECTACCESSREVIEWS",
    "TOKENREVIEWS",
    "AiohttpTransport",
    "BufferedResponse",
    "HttpRequest",
    "HttpResponse",
    "KubeClient",
    "PatchType",
    "Resource",
    "Transport",
    "api_error_from_body",
]

_log = logging.getLogger(__name__)

PatchType = Literal["strategic", "merge", "json", "apply"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML; the apiserver accepts it as is
}

# Characters left unescaped in a path segment: everything a Kubernetes name may hold except "/".
_SAFE_SEGMENT = ":@!$&'()*+,;=-._~"

# client-go's rest.Request retries 429s and 5xx responses carrying Retry-After up to 10 times.
MAX_RETRY_AFTER_RETRIES = 10
# Extra client-side time a watch gets beyond its server-side timeoutSeconds.
WATCH_CLIENT_TIMEOUT_SLACK = 30.0


def _seg(value: str) -> str:
    if not value:
        raise ValueError("empty name or namespace in an API path")
    return quote(value, safe=_SAFE_SEGMENT)


@dataclass(frozen=True, slots=True)
class Resource:
    """An API resource: where it lives (group/version/plural), what it is (kind), its scope."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, else ``group/version``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path: ``/api/v1/namespaces/ns/services/name/status`` and the like.

        A namespaced resource without ``namespace`` gives the all-namespaces collection; a name on a
        namespaced resource needs a namespace.
        """
        out = "/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace is not None:
            if not self.namespaced:
                raise ValueError(f"{self.plural} is cluster-scoped; got namespace {namespace!r}")
            out += f"/namespaces/{_seg(namespace)}"
        elif name is not None and self.namespaced:
            raise ValueError(f"{self.plural} is namespaced; {name!r} needs a namespace")
        out += f"/{self.plural}"
        if name is not None:
            out += f"/{_seg(name)}"
        if subresource:
            if name is None:
                raise ValueError("a subresource needs a name")
            out += f"/{subresource}"
        return out


NODES = Resource("", "v1", "nodes", "Node", False)
SERVICES = Resource("", "v1", "services", "Service", True)
EVENTS = Resource("", "v1", "events", "Event", True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", True)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
TOKENREVIEWS = Resource("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False)
SUBJECTACCESSREVIEWS = Resource(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False
)


# -- transport ---------------------------------------------------------------------------------


@dataclass(slots=True)
class HttpRequest:
    """One HTTP request to the apiserver, as a :class:`Transport` sees it."""

    method: str
    path: str  # absolute path, already escaped, no query
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout: float | None = None  # total seconds for the whole exchange; None: no limit
    stream: bool = False  # True: the caller reads the body incrementally (watches)


class HttpResponse(abc.ABC):
    """A response: status, lower-cased headers, and a body read at once or in chunks."""

    status: int
    headers: Mapping[str, str]

    @abc.abstractmethod
    async def read(self) -> bytes: ...

    @abc.abstractmethod
    def iter_chunks(self) -> AsyncGenerator[bytes, None]: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class BufferedResponse(HttpResponse):
    """A response whose body is already in memory."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    async def read(self) -> bytes:
        return self.body

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        if self.body:
            yield self.body

    async def aclose(self) -> None:
        pass


class Transport(abc.ABC):
    """Sends requests to one apiserver. Raises :class:`ccm.errors.KubeError` if it cannot.

    A non-streaming request returns with the body read and the connection released; a streaming
    one returns an open response the caller must ``aclose()``.
    """

    host: str  # the apiserver URL, e.g. https://127.0.0.1:6443

    @abc.abstractmethod
    async def send(self, request: HttpRequest) -> HttpResponse: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    def with_bearer_token(self, token: str) -> TokenTransport:
        """A transport to the same apiserver that authenticates with ``token`` only (no client
        certificate, none of this transport's credentials). The default sends through this
        transport with an ``Authorization`` header, which suits in-memory fakes."""
        return _HeaderTokenTransport(self, token)


class TokenTransport(Transport):
    """A transport authenticating with a bearer token that can be replaced (token refresh)."""

    @abc.abstractmethod
    def set_token(self, token: str) -> None: ...


class _HeaderTokenTransport(TokenTransport):
    def __init__(self, inner: Transport, token: str) -> None:
        self.host = inner.host
        self._inner = inner
        self._token = token

    def set_token(self, token: str) -> None:
        self._token = token

    async def send(self, request: HttpRequest) -> HttpResponse:
        headers = {**request.headers, "Authorization": f"Bearer {self._token}"}
        return await self._inner.send(dataclasses.replace(request, headers=headers))

    async def aclose(self) -> None:
        return None  # the inner transport belongs to someone else


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Auth:
    """Authorization headers from a kubernetes_asyncio Configuration, refreshing expiring tokens.

    In-cluster tokens: kubernetes_asyncio's ``refresh_api_key_hook`` re-reads the projected token
    file every minute. Exec plugins: the plugin is re-run when its token's
    ``expirationTimestamp`` is near, or after a 401 (as client-go's exec authenticator does), one
    run at a time. Legacy ``auth-provider`` tokens (gcp, oidc) are loaded once at connect.
    """

    def __init__(self, configuration: Any, loader: Any | None) -> None:
        self._cfg = configuration
        self._loader = loader
        user = getattr(loader, "_user", None) if loader is not None else None
        self._exec = bool(user is not None and "exec" in user)
        self._stale = False
        self._lock = asyncio.Lock()

    async def headers(self) -> dict[str, str]:
        if self._exec and (self._stale or hasattr(self._loader, "exec_plugin_expiry")):
            async with self._lock:
                await self._refresh_exec()
        settings = await self._cfg.auth_settings()
        out: dict[str, str] = {}
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                out[str(setting["key"])] = str(setting["value"])
        return out

    async def _refresh_exec(self) -> None:
        loader = self._loader
        assert loader is not None
        if self._stale and hasattr(loader, "exec_plugin_expiry"):
            delattr(loader, "exec_plugin_expiry")
        if self._stale or hasattr(loader, "exec_plugin_expiry"):
            try:
                # Returns at once while the cached token is valid; re-runs the plugin otherwise.
                await loader.load_from_exec_plugin()
            except Exception as exc:
                raise errors.KubeError(f"exec credential plugin failed: {_describe(exc)}") from exc
            token = getattr(loader, "token", None)
            if token:
                self._cfg.api_key["BearerToken"] = token
            self._stale = False

    def invalidate(self) -> bool:
        """A 401 came back: refresh credentials before the next request. True if that may help."""
        if self._exec:
            self._stale = True
            return True
        return False


class _AiohttpStream(HttpResponse):
    def __init__(self, resp: aiohttp.ClientResponse, what: str) -> None:
        self._resp = resp
        self._what = what
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.headers.items()}

    async def read(self) -> bytes:
        import aiohttp

        try:
            return await self._resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise errors.KubeError(f"{self._what}: {_describe(exc)}") from exc

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        import aiohttp

        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise errors.KubeError(f"{self._what}: {_describe(exc)}") from exc

    async def aclose(self) -> None:
        # close(), not release(): an unfinished watch body must not go back to the pool.
        self._resp.close()


class AiohttpTransport(Transport):
    """HTTP over kubernetes_asyncio's aiohttp session, TLS context and credentials."""

    def __init__(
        self, configuration: Any, *, loader: Any | None = None, connect_timeout: float = 30.0
    ):
        rest = leanimport.load()[1]

        self.host = str(configuration.host).rstrip("/")
        self._configuration = configuration
        self._rest = rest.RESTClientObject(configuration)
        self._auth = _Auth(configuration, loader)
        self._connect_timeout = connect_timeout
        self._env_proxy = self._resolve_env_proxy()

    def _resolve_env_proxy(self) -> tuple[Any, Any] | None:
        """kubernetes_asyncio's session trusts the environment, which makes aiohttp read ~/.netrc in
        a thread and parse the proxy variables on EVERY request (a fifth of ccm's CPU when
        initialising Nodes, measured with bench/). Resolve the proxy for our one host once, as
        client-go's ProxyFromEnvironment does, and switch the per-request lookups off."""
        session = self._rest.pool_manager
        if not getattr(session, "_trust_env", False):
            return None
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        session._trust_env = False
        if self._rest.proxy:
            return None
        try:
            proxy, proxy_auth = get_env_proxy_for_url(URL(self.host))
        except LookupError:
            return None
        return proxy, proxy_auth

    async def send(self, request: HttpRequest) -> HttpResponse:
        import aiohttp

        url = self.host + request.path
        what = f"{request.method} {url}"
        timeout = aiohttp.ClientTimeout(
            total=request.timeout, sock_connect=self._connect_timeout, connect=None
        )
        extra: dict[str, Any] = {}
        if self._rest.proxy:
            extra["proxy"] = self._rest.proxy
            if self._rest.proxy_headers:
                extra["proxy_headers"] = self._rest.proxy_headers
        elif self._env_proxy is not None:
            extra["proxy"], extra["proxy_auth"] = self._env_proxy
        if self._rest.server_hostname:
            extra["server_hostname"] = self._rest.server_hostname
        session: aiohttp.ClientSession = self._rest.pool_manager
        for attempt in range(2):
            headers = dict(request.headers)
            headers.update(await self._auth.headers())
            try:
                resp = await session.request(
                    request.method,
                    url,
                    params=request.query or None,
                    data=request.body,
                    headers=headers,
                    timeout=timeout,
                    **extra,
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise errors.KubeError(f"{what}: {_describe(exc)}") from exc
            if resp.status == 401 and attempt == 0 and self._auth.invalidate():
                resp.release()
                continue
            if request.stream:
                return _AiohttpStream(resp, what)
            try:
                body = await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise errors.KubeError(f"{what}: {_describe(exc)}") from exc
            finally:
                resp.release()
            return BufferedResponse(
                resp.status, body, {k.lower(): v for k, v in resp.headers.items()}
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self._rest.close()

    def with_bearer_token(self, token: str) -> TokenTransport:
        """A new connection pool to the same apiserver, trusting the same CA, that presents only
        ``token`` (a client certificate would win over the token at the apiserver)."""
        cfg = copy.copy(self._configuration)
        cfg.cert_file = None
        cfg.key_file = None
        cfg.username = None
        cfg.password = None
        cfg.refresh_api_key_hook = None
        cfg.api_key = {}
        cfg.api_key_prefix = {}
        transport = _AiohttpTokenTransport(cfg, connect_timeout=self._connect_timeout)
        transport.set_token(token)
        return transport


class _AiohttpTokenTransport(AiohttpTransport, TokenTransport):
    def set_token(self, token: str) -> None:
        self._configuration.api_key = {"BearerToken": token}
        self._configuration.api_key_prefix = {"BearerToken": "Bearer"}


# -- configuration -----------------------------------------------------------------------------


def _kubeconfig_paths(kubeconfig: str | None) -> tuple[list[str], str]:
    """The files to load and how to name them in messages."""
    if kubeconfig is not None:
        return [os.path.expanduser(kubeconfig)], kubeconfig
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [os.path.expanduser(p) for p in env.split(os.pathsep) if p], env
    default = os.path.join("~", ".kube", "config")
    return [os.path.expanduser(default)], default


def _config_reason(exc: BaseException) -> str:
    # kubernetes_asyncio's ConfigException messages stand on their own.
    if type(exc).__name__ == "ConfigException" and str(exc).strip():
        return str(exc).strip()
    return _describe(exc)


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.exists(p)]


def _yaml_reason(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"not valid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"
    return f"not valid YAML: {problem}"


def _named(entries: Any, name: str) -> dict[str, Any] | None:
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def _read_kubeconfigs(paths: list[str], label: str) -> dict[str, Any]:
    """Read and merge kubeconfig files the way kubernetes_asyncio will, for clear errors first."""
    import yaml

    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    found = False
    for path in paths:
        if not os.path.exists(path):
            if len(paths) == 1:
                raise errors.ConfigError(f"kubeconfig {path}: file not found")
            continue
        found = True
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.ConfigError(f"kubeconfig {path}: cannot read: {_describe(exc)}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise errors.ConfigError(f"kubeconfig {path}: {_yaml_reason(exc)}") from exc
        if data is None:
            raise errors.ConfigError(f"kubeconfig {path}: file is empty")
        if not isinstance(data, dict):
            raise errors.ConfigError(
                f"kubeconfig {path}: not a kubeconfig (expected a mapping, got "
                f"{type(data).__name__})"
            )
        for section in ("clusters", "contexts", "users"):
            entries = data.get(section)
            if entries is None:
                entries = []
            if not isinstance(entries, list):
                raise errors.ConfigError(f"kubeconfig {path}: {section!r} must be a list")
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    raise errors.ConfigError(
                        f"kubeconfig {path}: every entry of {section!r} needs a name"
                    )
                if _named(merged[section], entry["name"]) is None:
                    merged[section].append(entry)
        if data.get("current-context"):
            merged["current-context"] = data["current-context"]
    if not found:
        raise errors.ConfigError(f"kubeconfig {label}: no such file")
    return merged


def _check_kubeconfig(
    merged: dict[str, Any], context: str | None, label: str, master: str | None
) -> None:
    name = context or merged.get("current-context")
    if not name:
        raise errors.ConfigError(
            f"kubeconfig {label}: no current-context set (set one or pass a context)"
        )
    ctx = _named(merged["contexts"], str(name))
    if ctx is None or not isinstance(ctx.get("context"), dict):
        raise errors.ConfigError(f'kubeconfig {label}: context "{name}" not found')
    cluster_name = ctx["context"].get("cluster")
    if not cluster_name:
        raise errors.ConfigError(f'kubeconfig {label}: context "{name}" names no cluster')
    cluster = _named(merged["clusters"], str(cluster_name))
    if cluster is None or not isinstance(cluster.get("cluster"), dict):
        raise errors.ConfigError(
            f'kubeconfig {label}: cluster "{cluster_name}" (of context "{name}") not found'
        )
    if not cluster["cluster"].get("server") and not master:
        raise errors.ConfigError(f'kubeconfig {label}: cluster "{cluster_name}" has no server')


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """kubernetes_asyncio logs errors it then raises; we report them once, as a ConfigError."""
    logger = logging.getLogger(logger_name)
    flt = _DropRecords()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


async def _connect_transport(
    *, kubeconfig: str | None, context: str | None, master: str | None, request_timeout: float
) -> AiohttpTransport:
    Configuration, _, load_kube_config, load_incluster_config = leanimport.load()

    configuration = Configuration()
    loader: Any | None = None
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        where = "in-cluster configuration"
        try:
            load_incluster_config(client_configuration=configuration)
        except Exception as exc:
            raise errors.ConfigError(f"{where}: {_config_reason(exc)}") from exc
        _log.info("Using in-cluster configuration")
    else:
        paths, label = _kubeconfig_paths(kubeconfig)
        existing = _existing(paths)
        if kubeconfig is None and master and not existing:
            where = f"--master {master}"  # upstream: --master alone, without credentials
        else:
            where = f"kubeconfig {label}"
            merged = _read_kubeconfigs(paths, label)
            _check_kubeconfig(merged, context, label, master)
            try:
                with _quiet("kubernetes_asyncio.config.kube_config"):
                    loader = await load_kube_config(
                        config_file=os.pathsep.join(existing),
                        context=context,
                        client_configuration=configuration,
                        persist_config=False,
                    )
            except Exception as exc:
                raise errors.ConfigError(f"{where}: {_config_reason(exc)}") from exc
            _log.info("Using kubeconfig %s", label)
    if master:
        configuration.host = master.rstrip("/")
    try:
        return AiohttpTransport(configuration, loader=loader, connect_timeout=request_timeout)
    except Exception as exc:  # a bad CA bundle or client key shows up here (ssl, OSError)
        raise errors.ConfigError(f"{where}: {_describe(exc)}") from exc


# -- the client --------------------------------------------------------------------------------


def api_error_from_body(status: int, body: bytes) -> errors.ApiError:
    """The ApiError for an HTTP error status and its raw body (a ``Status`` object, or not)."""
    decoded: Any = None
    if body:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        return errors.api_error_for_status(status, decoded)
    text = body.decode("utf-8", errors="replace").strip()[:512] if body else ""
    return errors.api_error_for_status(
        status, {"message": text or f"apiserver returned HTTP {status}", "code": status}
    )


def _retry_after(resp: HttpResponse) -> float | None:
    if resp.status != 429 and resp.status < 500:
        return None
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out.extend((key, _query_value(v)) for v in value)
        else:
            out.append((key, _query_value(value)))
    return out


_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})

#: Creates that persist nothing (reviews asked by the secure server, token requests): a dry run
#: still sends them.
_NON_PERSISTING = re.compile(
    r"/(tokenreviews|subjectaccessreviews|selfsubjectaccessreviews|localsubjectaccessreviews"
    r"|serviceaccounts/[^/]+/token)$"
)
_API_PREFIX = re.compile(r"^/api/v1/|^/apis/[^/]+/[^/]+/")


def _dry_run_applies(verb: str, method: str, path: str) -> bool:
    if verb not in _WRITE_VERBS or not dryrun.active():
        return False
    return not (method == "POST" and _NON_PERSISTING.search(path))


def _merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): the answer a dry-run patch gives, close enough for a strategic
    merge patch too (lists are replaced instead of merged by key)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class KubeClient:
    """An asyncio Kubernetes API client speaking plain dicts.

    Create it with :meth:`connect` (real apiserver) or use :class:`ccm.kube.fake.FakeKubeClient`
    in unit tests. Every request waits for a token of the client-side QPS/burst limiter (shared by
    the clients :meth:`for_component` derives), carries ``request_timeout``, and retries ``429``/
    ``5xx`` responses that carry ``Retry-After`` (up to 10 times, like client-go).

    Objects returned are fresh dicts the caller owns. Verbs are counted in
    :attr:`requests_total` (this client) and :attr:`all_requests_total` (every client sharing the
    transport), keyed ``get list watch create update patch delete``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        qps: float = 20.0,
        burst: int = 30,
        user_agent: str = "ccm",
        request_timeout: float = 30.0,
        limiter: ratelimit.TokenBucket | None = None,
    ) -> None:
        self._transport = transport
        self._limiter = limiter if limiter is not None else ratelimit.TokenBucket(qps, burst)
        self._base_user_agent = user_agent
        self.user_agent = user_agent
        self.request_timeout = float(request_timeout)
        self._owns_transport = True
        self.requests_total: collections.Counter[str] = collections.Counter()
        self.all_requests_total: collections.Counter[str] = collections.Counter()
        self._metric_host = urlsplit(transport.host).netloc or transport.host

    @classmethod
    async def connect(
        cls,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        master: str | None = None,
        qps: float = 20.0,
        burst: int = 30,
        user_agent: str = "ccm",
        request_timeout: float = 30.0,
    ) -> Self:
        """Connect using a kubeconfig, or the in-cluster service account.

        ``kubeconfig=None``: in-cluster configuration when ``KUBERNETES_SERVICE_HOST`` is set,
        else ``$KUBECONFIG`` (a path list) or ``~/.kube/config``. ``master`` overrides the server
        URL (upstream ``--master``). Nothing is sent until the first request. Raises
        :class:`ccm.errors.ConfigError` for a missing, unreadable or malformed configuration.
        """
        transport = await _connect_transport(
            kubeconfig=kubeconfig, context=context, master=master, request_timeout=request_timeout
        )
        return cls(
            transport, qps=qps, burst=burst, user_agent=user_agent, request_timeout=request_timeout
        )

    def for_component(self, user_agent: str) -> Self:
        """A client sharing this one's transport and rate limiter, for one component.

        Its User-Agent is this client's base user agent + ``/`` + ``user_agent`` (upstream
        ``rest.AddUserAgent``): ``for_component("node-controller")`` on a ``ccm/v1`` client
        sends ``ccm/v1/node-controller``. Closing a derived client does not close the transport;
        closing the client :meth:`connect` returned does.
        """
        clone = copy.copy(self)
        clone.user_agent = f"{self._base_user_agent}/{user_agent}"
        clone._owns_transport = False
        clone.requests_total = collections.Counter()
        return clone

    @property
    def host(self) -> str:
        """The apiserver URL."""
        return self._transport.host

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def base_user_agent(self) -> str:
        return self._base_user_agent

    @property
    def limiter(self) -> ratelimit.TokenBucket:
        return self._limiter

    @property
    def write_count(self) -> int:
        """Writes (create, update, patch, delete) sent by this client."""
        return sum(self.requests_total[v] for v in ("create", "update", "patch", "delete"))

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "User-Agent": self.user_agent,
            # Upstream builds the CCM's client with compression disabled.
            "Accept-Encoding": "identity",
        }
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _timed_send(
        self, request: HttpRequest, verb: str, host: str, started: float
    ) -> HttpResponse:
        try:
            return await self._transport.send(request)
        except errors.KubeError:
            metrics.REST_CLIENT_REQUESTS.labels("<error>", request.method, host).inc()
            raise
        finally:
            metrics.REST_CLIENT_REQUEST_DURATION.labels(verb, host).observe(
                max(0.0, clock.monotonic() - started)
            )

    async def _send(self, verb: str, request: HttpRequest) -> HttpResponse:
        """Throttle, send, count, retry on Retry-After, translate error statuses."""
        host = self._metric_host
        retries = 0
        while True:
            waited = await self._limiter.acquire()
            metrics.REST_CLIENT_RATE_LIMITER_DURATION.labels(verb, host).observe(waited)
            if waited > 1.0:
                _log.info(
                    "Waited for %.2fs due to client-side throttling, request: %s:%s",
                    waited,
                    request.method,
                    request.path,
                )
            if verb in _WRITE_VERBS and _dry_run_applies(verb, request.method, request.path):
                # _call answers a dry run's writes; one that got here was never meant to.
                raise errors.KubeError(f"dry run: refusing {request.method} {request.path}")
            # Right before sending (after the limiter's wait), and for as long as the request is
            # on its way: a leader whose lease lapsed meanwhile must not write (ccm.fencing).
            fence = fencing.fenced() if verb in _WRITE_VERBS else contextlib.nullcontext()
            async with fence:
                self.requests_total[verb] += 1
                self.all_requests_total[verb] += 1
                started = clock.monotonic()
                resp = await self._timed_send(request, verb, host, started)
            metrics.REST_CLIENT_REQUESTS.labels(str(resp.status), request.method, host).inc()
            if resp.status < 400:
                return resp
            delay = _retry_after(resp)
            if delay is not None and retries < MAX_RETRY_AFTER_RETRIES:
                await resp.aclose()
                retries += 1
                _log.debug(
                    "Got HTTP %d with Retry-After %.1fs for %s %s (retry %d)",
                    resp.status,
                    delay,
                    request.method,
                    request.path,
                    retries,
                )
                await clock.sleep(min(delay, self.request_timeout))
                continue
            try:
                body = await resp.read()
            finally:
                await resp.aclose()
            raise api_error_from_body(resp.status, body)

    async def _call(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        query: builtins.list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> bytes:
        if _dry_run_applies(verb, method, path):
            return await self._dry_run_write(verb, method, path, body, content_type)
        request = HttpRequest(
            method=method,
            path=path,
            query=query or [],
            headers=self._headers(content_type),
            body=body,
            timeout=self.request_timeout,
        )
        resp = await self._send(verb, request)
        try:
            return await resp.read()
        finally:
            await resp.aclose()

    async def _dry_run_write(
        self, verb: str, method: str, path: str, body: bytes | None, content_type: str | None
    ) -> bytes:
        """Log and count a write the dry run does not send; answer it as the apiserver would
        have: a create or update with the object sent, a delete with nothing, a patch with the
        object read afresh and the patch applied to it (a missing object raises NotFoundError,
        as the real patch would)."""
        target = _API_PREFIX.sub("", path)
        text = body.decode("utf-8", errors="replace") if body else ""
        dryrun.would_write(verb, target, body=text[:2000])
        if verb == "delete":
            return b""
        if verb in ("create", "update"):
            return body or b"{}"
        current = orjson.loads(await self._call("get", "GET", path) or b"{}")
        if content_type in (PATCH_CONTENT_TYPES["merge"], PATCH_CONTENT_TYPES["strategic"]):
            with contextlib.suppress(orjson.JSONDecodeError):
                current = _merge(current, orjson.loads(body or b"{}"))
        return orjson.dumps(current)

    async def _json(self, verb: str, method: str, path: str, **kwargs: Any) -> Any:
        raw = await self._call(verb, method, path, **kwargs)
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.KubeError(f"{method} {path}: malformed JSON response: {exc}") from exc

    @staticmethod
    def _namespace_of(res: Resource, namespace: str | None, body: Any) -> str | None:
        if namespace is None and res.namespaced and isinstance(body, Mapping):
            meta = body.get("metadata")
            if isinstance(meta, Mapping) and isinstance(meta.get("namespace"), str):
                return str(meta["namespace"])
        return namespace

    # -- verbs ---------------------------------------------------------------------------------

    async def get(
        self, res: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]:
        obj: dict[str, Any] = await self._json(
            "get", "GET", res.path(namespace=namespace, name=name)
        )
        return obj

    async def list(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """One raw page: ``{"items": [...], "metadata": {"resourceVersion", "continue"?}}``."""
        query = _query(
            {
                "labelSelector": label_selector or None,
                "fieldSelector": field_selector or None,
                "limit": limit,
                "continue": continue_token or None,
                "resourceVersion": resource_version,
            }
        )
        page: dict[str, Any] = await self._json(
            "list", "GET", res.path(namespace=namespace), query=query
        )
        return page

    async def list_all(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """Every item, page by page; returns ``(items, resourceVersion of the list)``.

        Items get ``kind``/``apiVersion`` filled in (list items lack them). ``transform`` is
        applied to each item as its page arrives, so only trimmed objects accumulate. If a
        continue token expires mid-way (410), the list restarts once without paging, like
        client-go's pager.
        """
        return await paged_list(
            self,
            res,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            page_size=page_size,
            transform=transform,
        )

    async def watch(
        self,
        res: Resource,
        *,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield watch events ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object": {...}}``.

        Ends when the server closes the watch (after ``timeout_seconds``). An ``ERROR`` event
        raises the ApiError of its Status (:class:`ccm.errors.GoneError` for a too-old
        resourceVersion); a broken connection raises :class:`ccm.errors.KubeError`. Close it
        when done early: ``async with contextlib.aclosing(client.watch(...)) as events:``.
        """
        query = _query(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "labelSelector": label_selector or None,
                "fieldSelector": field_selector or None,
                "timeoutSeconds": int(timeout_seconds),
                "allowWatchBookmarks": "true" if allow_bookmarks else None,
            }
        )
        path = res.path(namespace=namespace)
        request = HttpRequest(
            method="GET",
            path=path,
            query=query,
            headers=self._headers(None),
            timeout=float(timeout_seconds) + WATCH_CLIENT_TIMEOUT_SLACK,
            stream=True,
        )
        resp = await self._send("watch", request)
        try:
            async with contextlib.aclosing(resp.iter_chunks()) as chunks:
                pending = bytearray()
                async for chunk in chunks:
                    search_from = len(pending)
                    pending += chunk
                    start = 0
                    while (newline := pending.find(b"\n", search_from)) != -1:
                        line = bytes(pending[start:newline])
                        start = search_from = newline + 1
                        if line.strip():
                            yield _decode_event(line, path)
                    if start:
                        del pending[:start]
                if bytes(pending).strip():
                    yield _decode_event(bytes(pending), path)
        finally:
            await resp.aclose()

    async def create(
        self,
        res: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """POST ``body``; ``namespace`` defaults to ``body.metadata.namespace``.

        With ``subresource`` and ``name``, POSTs to the subresource (``serviceaccounts/token``).
        """
        namespace = self._namespace_of(res, namespace, body)
        path = res.path(
            namespace=namespace,
            name=name if subresource else None,
            subresource=subresource,
        )
        obj: dict[str, Any] = await self._json(
            "create",
            "POST",
            path,
            body=orjson.dumps(body),
            content_type="application/json",
        )
        return obj

    async def replace(
        self,
        res: Resource,
        name: str,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PUT ``body`` (with ``metadata.resourceVersion`` set, a conflict raises ConflictError)."""
        namespace = self._namespace_of(res, namespace, body)
        obj: dict[str, Any] = await self._json(
            "update",
            "PUT",
            res.path(namespace=namespace, name=name, subresource=subresource),
            body=orjson.dumps(body),
            content_type="application/json",
        )
        return obj

    async def patch(
        self,
        res: Resource,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = "strategic",
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> dict[str, Any]:
        """PATCH: strategic merge (default), JSON merge, JSON patch (a list of ops) or apply."""
        content_type = PATCH_CONTENT_TYPES.get(patch_type)
        if content_type is None:
            raise ValueError(f"unknown patch type {patch_type!r}")
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        query = _query({"fieldManager": field_manager, "force": force})
        obj: dict[str, Any] = await self._json(
            "patch",
            "PATCH",
            res.path(namespace=namespace, name=name, subresource=subresource),
            query=query,
            body=body if isinstance(body, bytes) else orjson.dumps(body),
            content_type=content_type,
        )
        return obj

    async def delete(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        preconditions: Mapping[str, Any] | None = None,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any] | None:
        """DELETE; returns the object when the apiserver returns it (e.g. finalizers pending),
        ``None`` when it returns a success ``Status``."""
        options: dict[str, Any] = {}
        if preconditions:
            options["preconditions"] = dict(preconditions)
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        body = None
        if options:
            body = orjson.dumps({"kind": "DeleteOptions", "apiVersion": "v1", **options})
        out = await self._json(
            "delete",
            "DELETE",
            res.path(namespace=namespace, name=name),
            body=body,
            content_type="application/json" if body is not None else None,
        )
        if not isinstance(out, dict) or out.get("kind") == "Status":
            return None
        return out

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        """The escape hatch: any method and path; returns decoded JSON, or text if not JSON."""
        method = method.upper()
        raw_body: bytes | None
        if body is None:
            raw_body = None
        elif isinstance(body, bytes):
            raw_body = body
        elif isinstance(body, str):
            raw_body = body.encode()
        else:
            raw_body = orjson.dumps(body)
            content_type = content_type or "application/json"
        raw = await self._call(
            _VERBS.get(method, method.lower()),
            method,
            path,
            query=_query(query),
            body=raw_body,
            content_type=content_type,
        )
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw.decode("utf-8", errors="replace")


def _decode_event(line: bytes, path: str) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise errors.KubeError(f"watch {path}: malformed event: {exc}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise errors.KubeError(f"watch {path}: malformed event (no object)")
    if event.get("type") == "ERROR":
        status = event["object"]
        code = status.get("code")
        raise errors.api_error_for_status(int(code) if isinstance(code, int) else 500, status)
    return event


async def paged_list(
    client: KubeClient,
    res: Resource,
    *,
    namespace: str | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    page_size: int = 500,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """List every item page by page (see :meth:`KubeClient.list_all`)."""
    limit: int | None = page_size if page_size and page_size > 0 else None
    while True:
        items: list[dict[str, Any]] = []
        token: str | None = None
        try:
            while True:
                page = await client.list(
                    res,
                    namespace=namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    limit=limit,
                    continue_token=token,
                )
                for item in page.get("items") or ():
                    item.setdefault("kind", res.kind)
                    item.setdefault("apiVersion", res.api_version)
                    items.append(transform(item) if transform is not None else item)
                meta = page.get("metadata") or {}
                token = meta.get("continue") or None
                if token is None:
                    return items, str(meta.get("resourceVersion") or "")
        except errors.GoneError:
            if token is None or limit is None:
                raise
            # The continue token expired (etcd compacted its snapshot): list in one go instead.
            _log.info("Continue token for %s expired; listing without pagination", res.plural)
            limit = None
