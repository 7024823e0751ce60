"""The neutral core every layer may import: the results schema, percentiles, hardware identity, folders."""
