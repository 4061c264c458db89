"""The contracts: event schemas, topic and table names, the feature contract."""
