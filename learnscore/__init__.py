"""learnscore: the application shell (config, Spark factory, local stack, CLI)."""

__version__ = "0.1.0"
