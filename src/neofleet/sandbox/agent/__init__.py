"""The sandbox's node agent: a kubelet stand-in that runs pods as local processes.

``podplan`` (pure) turns a Pod into a process plan, ``runner`` runs one pod's processes and
probes them, ``status`` (pure) builds the pod status a kubelet would report, and ``agent``
is the only module here that talks to the Kubernetes API (nodes, leases, pod watch).
Part of the sandbox only: never used on a real cluster.
"""
