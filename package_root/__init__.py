"""scalinglab: scaling-law research on JAX/Flax."""
