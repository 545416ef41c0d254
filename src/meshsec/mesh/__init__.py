"""The local-mesh runtime behind ``meshsec up``: manifests, registry, process supervision."""
