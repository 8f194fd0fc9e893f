"""What the sandbox runs beside its cluster, for the demo and the tests: a real OCI
registry (Debian's docker-registry), a real Prometheus, and two stand-ins for what the
sandbox cannot run: ``TrafficDriver`` for kube-proxy (clients that follow the ready
endpoints of a selector) and ``PodTargets`` for Prometheus' kubernetes_sd (a file_sd list
of the pods). Nothing here is used on a real cluster."""
