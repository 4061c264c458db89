"""learnscore serving."""
