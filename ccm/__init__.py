"""ccm: an out-of-tree Kubernetes cloud controller manager framework."""
