"""learnscore registry."""
