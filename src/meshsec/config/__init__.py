"""Typed settings and the one loader (defaults < file < env < flags); policy config sources."""
