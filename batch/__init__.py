"""learnscore batch."""
