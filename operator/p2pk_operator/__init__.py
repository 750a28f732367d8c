"""Kubernetes operator for P2PExperiment resources (group p2pk.io, version v1alpha1)."""
