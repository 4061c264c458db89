"""learnscore monitoring."""
