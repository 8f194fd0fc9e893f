"""The neofleet operator: CompilationJob (and, next, EdgeModelDeployment) controllers.

Data flow: ``api`` (the models) → ``planning`` (pure: spec + observed objects → desired
objects, status, events) → ``render`` (desired → manifest dicts) → ``kube`` (the only
module that talks to the Kubernetes API) → ``handlers`` (thin kopf registrations) and
``main`` (``neofleet operator``). Planners import neither kopf nor kubernetes.

Errors (``neofleet.operator.errors``)::

    OperatorError
     └── UntrustedResultError   a compile pod's result lacks a digest or does not parse

Status conditions carry a reason from ``neofleet.operator.conditions.REASONS`` only.
"""
