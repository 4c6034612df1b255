"""The runtime's Kubernetes edge: the only package that imports kubernetes_asyncio; it speaks
dicts. Audience: this repository's maintainers (and programs that add a controller); a provider
never imports it.

Modules (import the module, then use its names: ``from ccm.kube import client``):

* :mod:`ccm.kube.client` — :class:`~ccm.kube.client.KubeClient`, resources, raw-JSON requests.
* :mod:`ccm.kube.informer` — LIST+WATCH caches with event handlers.
* :mod:`ccm.kube.workqueue` — client-go style work queues and rate limiters.
* :mod:`ccm.kube.events` — the Event recorder.
* :mod:`ccm.kube.ratelimit` — the token bucket behind client QPS/burst.
* :mod:`ccm.kube.health` — waiting for the apiserver's ``/healthz`` at start-up.
* :mod:`ccm.kube.fake` — an in-memory apiserver and ``FakeKubeClient`` for unit tests.
"""
