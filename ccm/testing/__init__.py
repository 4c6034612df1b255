"""The provider testing kit: what a provider author needs to test a cloud provider with ccm.

* :mod:`ccm.testing.conformance`: the conformance suite (``ccm conformance``, or one pytest item
  per scenario with :mod:`ccm.testing.conformance.pytest_plugin`) and the driver interface a
  provider implements for it.
* :mod:`ccm.testing.fake_cloud`: the fake cloud provider (entry point ``fake``), an in-memory
  cloud for unit tests, end-to-end tests and benchmarks.
* :mod:`ccm.testing.pytest_plugin`: the pytest plugin (entry point ``pytest11: ccm``) with a real
  kube-apiserver and etcd as fixtures.
* :mod:`ccm.testing.controlplane`: the control-plane launcher (kube-apiserver and etcd on
  127.0.0.1), with :mod:`ccm.testing.assets` to find or build their binaries.
* :mod:`ccm.testing.daemon`: the daemon runner (the real ``ccm`` daemon as a subprocess), and
  :mod:`ccm.testing.kubelet`: Nodes registered as a kubelet does.

The runtime never imports it (an import contract says so). This repository's own tooling (the
demo, the manifest and chart renderers) lives outside the installed package, in ``devtools/``.
"""
