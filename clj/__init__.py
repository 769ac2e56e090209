"""clj: continual learning in JAX."""
