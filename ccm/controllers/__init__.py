"""The runtime's control loops, one package per upstream controller, and what they share.
Audience: this repository's maintainers, and programs that add a controller of their own
(``ccm.controllers.base.call_cloud``); a provider never imports it.

- :mod:`.node` (``cloud-node-controller``), :mod:`.nodelifecycle`
  (``cloud-node-lifecycle-controller``), :mod:`.route` (``node-route-controller``) and
  :mod:`.service` (``service-lb-controller``): each package's docstring says what it ports and
  how it differs from upstream, and names its modules in reading order.
- :mod:`.base`: the bounded cloud call, the work-queue loop and the periodic loop;
  :mod:`.failures`: the one switch that decides what a failed reconcile means, and the
  conflict-retry helper.
- :mod:`.nodeutil` and :mod:`.servicehelpers`: the pure helpers, with upstream's table cases in
  their tests; :mod:`.batching`, :mod:`.cloudapi` and :mod:`.priority`: batching of cloud calls,
  the cloud API budget and the priority gate.
"""
