"""The runtime's Kubernetes edge, speaking dicts: the one apiserver client of the daemon, the
doctor, the conformance suite, the testing kit, the bench and the chaos run. Audience: this
repository's maintainers (and programs that add a controller); a provider never imports it.

Modules (import the module, then use its names: ``from ccm.kube import client``):

* :mod:`ccm.kube.client` — :class:`~ccm.kube.client.KubeClient`: verbs, throttling, retries,
  errors; it re-exports the resources and transport types below.
* :mod:`ccm.kube.rest` — the request path under the verbs (limiter, retries, fencing, dry run).
* :mod:`ccm.kube.resources` — :class:`~ccm.kube.resources.Resource` and ``NODES``, ``SERVICES`` …
* :mod:`ccm.kube.wire` — query strings, error bodies, watch lines, paged lists, dry-run answers.
* :mod:`ccm.kube.transport` — the :class:`~ccm.kube.transport.Transport` interface.
* :mod:`ccm.kube.kubeconfig` — kubeconfig files and the in-cluster service account, read once.
* :mod:`ccm.kube.auth` — tokens, rotating token files, basic auth, credential plugins.
* :mod:`ccm.kube.dial` — connecting: configuration, credentials, and the transport that suits them.
* :mod:`ccm.kube.h1` — the transport: HTTP/1.1 keep-alive connections parsed by httptools.
* :mod:`ccm.kube.sockets` — the socket layer under it (TLS by ``ssl.SSLSocket``, in C).
* :mod:`ccm.kube.http` — the aiohttp transport, used when a proxy is in the way.
* :mod:`ccm.kube.tls` — the TLS context of a connection (CA, client certificate).
* :mod:`ccm.kube.credentials` — one ServiceAccount identity per controller.
* :mod:`ccm.kube.informer` — LIST+WATCH caches with event handlers.
* :mod:`ccm.kube.workqueue` — client-go style work queues and rate limiters.
* :mod:`ccm.kube.events` — the Event recorder.
* :mod:`ccm.kube.ratelimit` — the token bucket behind client QPS/burst.
* :mod:`ccm.kube.health` — waiting for the apiserver's ``/healthz`` at start-up.
* :mod:`ccm.kube.fake` — an in-memory apiserver and ``FakeKubeClient`` for unit tests.

kubernetes_asyncio is imported only here, and only by :mod:`ccm.kube.auth` for a kubeconfig user
with an exec credential plugin or a legacy auth-provider. The official ``kubernetes`` client is
used only by the tests, on purpose, as an observer independent of the code it checks.
"""
