"""Where a sweep's workers come from: the cluster registry, `open_client`, and TLS security."""

from ..errors import ConnectError, DeployError
from .clusters import CLUSTERS, DEFAULT_DASHBOARD, LOOPBACK, ClusterOptions, cluster_names, open_client
from .security import make_security, uses_tls

__all__ = ["CLUSTERS", "ClusterOptions", "ConnectError", "DeployError", "DEFAULT_DASHBOARD", "LOOPBACK",
           "cluster_names", "make_security", "open_client", "uses_tls"]
