"""The provider testing kit: the conformance suite (``ccm conformance``), the fake cloud, the
pytest plugin and its fixtures, the control-plane launcher. Audience: provider authors, in their
tests (``pip install 'kube-ccm[testing]'``). It drives the real runtime; the runtime never imports
it. This repository's own tooling lives outside the installed package.
"""
