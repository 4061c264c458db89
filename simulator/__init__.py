"""learnscore simulator."""
