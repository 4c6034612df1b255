"""The runtime: the four cloud controllers (cloud node, node lifecycle, service load balancer,
route) and what they share. Audience: this repository's maintainers, and programs that add a
controller of their own (``ccm.controllers.base.call_cloud``); a provider never imports it.
"""
