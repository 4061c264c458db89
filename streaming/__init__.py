"""learnscore streaming."""
