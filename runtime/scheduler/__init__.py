"""The scheduler: node registry, placement, deployments."""
