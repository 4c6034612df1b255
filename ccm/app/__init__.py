"""The runtime: the daemon itself (flags, wiring of the controllers, leader election, the secure
server, the cloud config watcher). Audience: this repository's maintainers and programs that embed
ccm (:func:`ccm.app.main.run`, :mod:`ccm.app.manager`); a provider never imports it.

Modules: :mod:`~ccm.app.main` (run the daemon, exit codes), :mod:`~ccm.app.options` (the
``Options`` and their checks), :mod:`~ccm.app.flagtable` (every flag and ``--help``),
:mod:`~ccm.app.upstreamflags` (upstream flags ccm accepts and ignores), :mod:`~ccm.app.catalog`
(controller names for ``--controllers``), :mod:`~ccm.app.specs` (what a controller is and which
run), :mod:`~ccm.app.manager` (the controller manager), :mod:`~ccm.app.serving` and
:mod:`~ccm.app.auth` (``/healthz``, ``/metrics`` and their authorization),
:mod:`~ccm.app.cloudconfig` (re-reading ``--cloud-config``), :mod:`~ccm.app.looplag` (event loop
lag and GC). The ``ccm`` command with its subcommands is :mod:`ccm.cli`.
"""
