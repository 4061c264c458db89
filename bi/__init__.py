"""learnscore BI access: the catalog over the Delta tables, the Thrift (JDBC) server, BI aggregates."""
