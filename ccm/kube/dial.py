"""Connecting to the apiserver: the configuration (kubeconfig or in-cluster), its credentials, and
the transport that suits it (:class:`ccm.kube.h1.H1Transport`, or aiohttp's when a proxy applies).
"""

from __future__ import annotations

import logging
import os
import urllib.request
from urllib.parse import urlsplit

from ccm.kube import auth, h1, kubeconfig
from ccm.kube.transport import Transport

__all__ = ["connect_transport", "proxy_applies"]

_log = logging.getLogger("ccm.kube.client")


def proxy_applies(conn: kubeconfig.Connection) -> bool:
    """True when requests to ``conn`` go through a proxy: its ``proxy-url``, or the environment's
    proxy for its scheme unless ``NO_PROXY`` excludes its host (client-go's
    ``ProxyFromEnvironment``)."""
    if conn.proxy_url:
        return True
    url = urlsplit(conn.server)
    proxies = urllib.request.getproxies_environment()
    if not proxies.get(url.scheme):
        return False
    return not urllib.request.proxy_bypass(url.netloc)


def transport_for(
    conn: kubeconfig.Connection, credentials: auth.Credentials, *, connect_timeout: float
) -> Transport:
    """The transport to ``conn``: aiohttp through a proxy, else :class:`ccm.kube.h1.H1Transport`."""
    if proxy_applies(conn):
        from ccm.kube import http  # aiohttp: imported only when a proxy is in the way

        return http.AiohttpTransport(conn, credentials, connect_timeout=connect_timeout)
    return h1.H1Transport(conn, credentials, connect_timeout=connect_timeout)


async def connect_transport(
    *, kubeconfig_path: str | None, context: str | None, master: str | None, connect_timeout: float
) -> Transport:
    """Load the configuration (see :meth:`ccm.kube.client.KubeClient.connect`) and open a pool."""
    if kubeconfig_path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        conn = kubeconfig.in_cluster()
        _log.info("Using in-cluster configuration")
    else:
        paths, label = kubeconfig.kubeconfig_paths(kubeconfig_path)
        if kubeconfig_path is None and master and not kubeconfig.any_exists(paths):
            conn = kubeconfig.master_only(master)  # upstream: --master alone, no credentials
        else:
            conn = kubeconfig.load_kubeconfig(paths, label, context=context, master=master)
            _log.info("Using kubeconfig %s", label)
    if master:
        conn = conn.with_server(master)
    credentials = await auth.credentials_for(conn)
    return transport_for(conn, credentials, connect_timeout=connect_timeout)
