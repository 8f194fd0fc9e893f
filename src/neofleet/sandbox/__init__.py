"""The local sandbox fleet: a real Kubernetes control plane plus simulated node pools.

``neofleet sandbox up`` builds (once, then cached) and starts etcd, kube-apiserver,
kube-controller-manager and kube-scheduler on 127.0.0.1, and a node agent that registers
Nodes for several pools and runs the pods bound to them as local processes. It exists for
development and tests on a machine without a kubelet; nothing in the operator, compiler or
runtime imports it, and it is never deployed to a real cluster.

Flow: ``build`` (binaries) → ``pki`` + ``kubeconfig`` → ``cluster`` (processes) →
``agent`` (nodes, leases, pods as processes).

Errors (``neofleet.sandbox.errors``)::

    SandboxError
     ├── BuildError         the control plane could not be built
     ├── ClusterError       a component did not start, or the cluster never became ready
     ├── StateError         the sandbox folder holds no cluster, or a running one
     └── PodSpecError       a pod asks for what the node agent cannot simulate
"""
