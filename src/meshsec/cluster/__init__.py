"""A local stand-in for a Kubernetes cluster's identity parts: service-account token issuer,
JWKS, and (later) the TokenReview API, so the mesh runs without Kubernetes."""
