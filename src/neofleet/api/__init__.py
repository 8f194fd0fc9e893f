"""The neofleet API (group ``neofleet.io``, version ``v1alpha1``) as Python models.

``compilationjob`` and ``edgemodeldeployment`` hold the spec and status models; ``crd``
turns them into CustomResourceDefinitions (``neofleet crds`` writes ``crds/``; a test fails
when the checked-in YAML drifts). Nothing here talks to Kubernetes.
"""

GROUP = "neofleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
