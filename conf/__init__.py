"""Configuration shipped with learnscore: base.yaml and the environment files laid over it."""
