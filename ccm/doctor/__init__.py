"""``ccm doctor``: read-only troubleshooting of a cluster running (or meant to run) the ccm. Part
of the runtime's command; audience: the operator.

One check per operator question, each answering with a verdict (ok / warn / fail), the objects at
fault and the fix in one line. Modules: :mod:`~ccm.doctor.model` (scope, verdicts, the shared
reads), :mod:`~ccm.doctor.nodes`, :mod:`~ccm.doctor.control`, :mod:`~ccm.doctor.services`,
:mod:`~ccm.doctor.rbac` (the checks), :mod:`~ccm.doctor.report` (table and JSON),
:mod:`~ccm.doctor.cli` (the command). The doctor only reads (and asks SubjectAccessReviews, which
change nothing).
"""
