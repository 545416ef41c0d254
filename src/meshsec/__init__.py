"""meshsec: a service-mesh security plane modelled on Istio's."""

__version__ = "0.1.0"
