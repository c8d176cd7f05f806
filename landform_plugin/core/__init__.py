"""The plugin's logic in plain numpy/GDAL/torch: importable without QGIS.

Nothing under this package may import ``qgis``; torch is imported only by the
modules that need it (nets, model files, prediction, training), never here.
"""
