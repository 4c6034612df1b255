"""Where the apiserver is and how to reach it: kubeconfig files and the in-cluster service account.

Ports the parts of client-go's ``tools/clientcmd`` and ``rest.InClusterConfig`` ccm needs. A
kubeconfig is read and merged once (``$KUBECONFIG`` may list several files; the first file that
names a cluster, user or context wins, and so does its ``current-context``), the context is chosen
(``--context`` or ``current-context``), and the result is one :class:`Connection`: server URL, TLS
(``certificate-authority``/``-data``, ``client-certificate``/``-data``, ``client-key``/``-data``,
``insecure-skip-tls-verify``, ``tls-server-name``), ``proxy-url``, and the user's ``token``,
``tokenFile`` or ``username``/``password``. Relative file paths are relative to the kubeconfig file
that holds them. A user with an ``exec`` credential plugin or a legacy ``auth-provider`` is marked
:attr:`Connection.plugin`; :mod:`ccm.kube.auth` then asks kubernetes_asyncio for its credentials.

Every problem is a :class:`ccm.errors.ConfigError` of one line naming the file and the field:
``kubeconfig /etc/kc: user "admin": client-key: file not found: /etc/admin.key``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccm import errors

__all__ = [
    "IN_CLUSTER_CA_PATH",
    "IN_CLUSTER_TOKEN_PATH",
    "Connection",
    "any_exists",
    "in_cluster",
    "kubeconfig_paths",
    "load_kubeconfig",
    "master_only",
]

IN_CLUSTER_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_CA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
IN_CLUSTER_WHERE = "in-cluster configuration"


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """Everything needed to open connections to one apiserver as one user.

    File fields hold absolute paths; ``*_data`` fields hold the decoded PEM bytes. ``where`` names
    the source in messages (``kubeconfig PATH``, ``in-cluster configuration``, ``--master URL``).
    """

    where: str
    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    cert_data: bytes | None = None
    key_file: str | None = None
    key_data: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None
    #: ``"exec"`` or ``"auth-provider"``: the credentials come from a plugin (:mod:`ccm.kube.auth`).
    plugin: str | None = None
    #: The kubeconfig files and the context chosen, for the plugin loader.
    files: tuple[str, ...] = ()
    context: str | None = None

    def without_credentials(self) -> Connection:
        """The same server and trust, with no client certificate, token, password or plugin."""
        return dataclasses.replace(
            self,
            cert_file=None,
            cert_data=None,
            key_file=None,
            key_data=None,
            token=None,
            token_file=None,
            username=None,
            password=None,
            plugin=None,
        )

    def with_server(self, server: str) -> Connection:
        """The same connection to another URL (``--master``)."""
        return dataclasses.replace(self, server=server.rstrip("/"))


def kubeconfig_paths(kubeconfig: str | None) -> tuple[list[str], str]:
    """The files to load and how to name them in messages: the flag, ``$KUBECONFIG`` (a path
    list) or ``~/.kube/config``."""
    if kubeconfig is not None:
        return [os.path.expanduser(kubeconfig)], kubeconfig
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [os.path.expanduser(p) for p in env.split(os.pathsep) if p], env
    default = os.path.join("~", ".kube", "config")
    return [os.path.expanduser(default)], default


def any_exists(paths: list[str]) -> bool:
    """Whether one of the kubeconfig files exists (``--master`` alone otherwise)."""
    return any(os.path.exists(p) for p in paths)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _yaml_reason(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"not valid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"
    return f"not valid YAML: {problem}"


@dataclass(frozen=True, slots=True)
class _Entry:
    body: dict[str, Any]  # the ``cluster``/``user``/``context`` mapping
    directory: str  # of the file that defined it, for relative paths


def _read_file(path: str) -> dict[str, Any]:
    import yaml

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
            f"kubeconfig {path}: not a kubeconfig (expected a mapping, got {type(data).__name__})"
        )
    return data


_SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}


def _merge(paths: list[str], label: str) -> tuple[dict[str, dict[str, _Entry]], str | None]:
    merged: dict[str, dict[str, _Entry]] = {section: {} for section in _SECTIONS}
    current: str | None = None
    found = False
    for path in paths:
        if not os.path.exists(path):
            if len(paths) == 1:
                raise errors.ConfigError(f"kubeconfig {path}: file not found")
            continue
        found = True
        data = _read_file(path)
        directory = os.path.dirname(os.path.abspath(path))
        for section, key in _SECTIONS.items():
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
                body = entry.get(key)
                if body is None:
                    body = {}
                if not isinstance(body, dict):
                    raise errors.ConfigError(
                        f'kubeconfig {path}: {key} "{entry["name"]}": {key!r} must be a mapping'
                    )
                merged[section].setdefault(entry["name"], _Entry(body, directory))
        if current is None and data.get("current-context"):
            current = str(data["current-context"])
    if not found:
        raise errors.ConfigError(f"kubeconfig {label}: no such file")
    return merged, current


class _Fields:
    """Reads typed fields of one kubeconfig entry, naming the field in every error."""

    def __init__(self, where: str, what: str, entry: _Entry) -> None:
        self.where = where
        self.what = what
        self.entry = entry

    def error(self, field: str, reason: str) -> errors.ConfigError:
        return errors.ConfigError(f"{self.where}: {self.what}: {field}: {reason}")

    def string(self, field: str) -> str | None:
        value = self.entry.body.get(field)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.error(field, f"must be a string, got {type(value).__name__}")
        return value

    def flag(self, field: str) -> bool:
        value = self.entry.body.get(field, False)
        if not isinstance(value, bool):
            raise self.error(field, f"must be true or false, got {value!r}")
        return value

    def path(self, field: str) -> str | None:
        value = self.string(field)
        if value is None:
            return None
        path = os.path.join(self.entry.directory, os.path.expanduser(value))
        if not os.path.isfile(path):
            raise self.error(field, f"file not found: {path}")
        return path

    def data(self, field: str) -> bytes | None:
        value = self.string(field)
        if value is None:
            return None
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise self.error(field, "not valid base64") from None

    def file_or_data(self, field: str) -> tuple[str | None, bytes | None]:
        """``field-data`` wins over ``field`` (as in client-go)."""
        data = self.data(f"{field}-data")
        if data is not None:
            return None, data
        return self.path(field), None


def load_kubeconfig(
    paths: list[str], label: str, *, context: str | None = None, master: str | None = None
) -> Connection:
    """The :class:`Connection` of ``context`` (default: ``current-context``) in the merged files.

    ``master`` (``--master``) replaces the cluster's server, which may then be absent.
    """
    where = f"kubeconfig {label}"
    merged, current = _merge(paths, label)
    name = context or current
    if not name:
        raise errors.ConfigError(f"{where}: no current-context set (set one or pass a context)")
    ctx = merged["contexts"].get(name)
    if ctx is None:
        raise errors.ConfigError(f'{where}: context "{name}" not found')
    ctx_fields = _Fields(where, f'context "{name}"', ctx)
    cluster_name = ctx_fields.string("cluster")
    if not cluster_name:
        raise errors.ConfigError(f'{where}: context "{name}" names no cluster')
    cluster_entry = merged["clusters"].get(cluster_name)
    if cluster_entry is None:
        raise errors.ConfigError(
            f'{where}: cluster "{cluster_name}" (of context "{name}") not found'
        )
    cluster = _Fields(where, f'cluster "{cluster_name}"', cluster_entry)
    server = cluster.string("server") or master
    if not server:
        raise errors.ConfigError(f'{where}: cluster "{cluster_name}" has no server')
    if master:
        server = master
    ca_file, ca_data = cluster.file_or_data("certificate-authority")
    fields: dict[str, Any] = {
        "where": where,
        "server": server.rstrip("/"),
        "ca_file": ca_file,
        "ca_data": ca_data,
        "insecure": cluster.flag("insecure-skip-tls-verify"),
        "tls_server_name": cluster.string("tls-server-name"),
        "proxy_url": cluster.string("proxy-url"),
        "files": tuple(p for p in paths if os.path.exists(p)),
        "context": context,
    }
    user_name = ctx_fields.string("user")
    if user_name:
        user_entry = merged["users"].get(user_name)
        if user_entry is None:
            raise errors.ConfigError(f'{where}: user "{user_name}" (of context "{name}") not found')
        fields.update(_user(_Fields(where, f'user "{user_name}"', user_entry)))
    return Connection(**fields)


def _user(user: _Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    body = user.entry.body
    if body.get("exec") is not None:
        out["plugin"] = "exec"
    elif body.get("auth-provider") is not None:
        out["plugin"] = "auth-provider"
    out["cert_file"], out["cert_data"] = user.file_or_data("client-certificate")
    out["key_file"], out["key_data"] = user.file_or_data("client-key")
    has_cert = out["cert_file"] is not None or out["cert_data"] is not None
    has_key = out["key_file"] is not None or out["key_data"] is not None
    if has_cert != has_key:
        missing = "client-key" if has_cert else "client-certificate"
        raise user.error(missing, "missing (client-certificate and client-key go together)")
    out["token"] = user.string("token")
    out["token_file"] = user.path("tokenFile")
    username, password = user.string("username"), user.string("password")
    if (username is None) != (password is None):
        raise user.error("password" if password is None else "username", "missing")
    out["username"], out["password"] = username, password
    return out


def master_only(master: str) -> Connection:
    """``--master`` without a kubeconfig: the URL alone, no credentials (as upstream)."""
    return Connection(where=f"--master {master}", server=master.rstrip("/"))


def _join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host or "%" in host else f"{host}:{port}"


def in_cluster(
    environ: Mapping[str, str] | None = None,
    *,
    token_path: str = IN_CLUSTER_TOKEN_PATH,
    ca_path: str = IN_CLUSTER_CA_PATH,
) -> Connection:
    """The pod's service account: ``KUBERNETES_SERVICE_HOST``/``PORT``, its token file (re-read
    as the kubelet rotates it, see :class:`ccm.kube.auth.TokenFile`) and its CA bundle."""
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    for name, value in (("KUBERNETES_SERVICE_HOST", host), ("KUBERNETES_SERVICE_PORT", port)):
        if not value:
            raise errors.ConfigError(f"{IN_CLUSTER_WHERE}: {name} is not set")
    for what, path in (("token", token_path), ("CA", ca_path)):
        try:
            with open(path, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            raise errors.ConfigError(
                f"{IN_CLUSTER_WHERE}: service account {what} file {path}: not found"
            ) from None
        except OSError as exc:
            raise errors.ConfigError(
                f"{IN_CLUSTER_WHERE}: service account {what} file {path}: {_describe(exc)}"
            ) from exc
        if not content.strip():
            raise errors.ConfigError(
                f"{IN_CLUSTER_WHERE}: service account {what} file {path}: empty"
            )
    return Connection(
        where=IN_CLUSTER_WHERE,
        server=f"https://{_join_host_port(host, port)}",
        ca_file=ca_path,
        token_file=token_path,
    )
