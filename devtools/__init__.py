"""This repository's own tooling, run from a checkout and not installed with ``ccm``.

* :mod:`devtools.demo`: ``make demo``, the guided tour on an embedded control plane with the
  private-cloud sample provider (``samples/private-cloud``).
* :mod:`devtools.manifests`: ``make manifests``, renders and validates the overlays of
  ``manifests/``.
* :mod:`devtools.helm`: ``make chart``, renders and validates the Helm chart of ``charts/ccm``.

They read the repository's layout and import its samples, so they are no part of the provider
testing kit (:mod:`ccm.testing`); run them from the repository root, e.g.
``python -m devtools.demo``.
"""
