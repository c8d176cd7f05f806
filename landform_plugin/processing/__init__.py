"""Processing provider and algorithms: thin glue between QGIS and ``core``."""
