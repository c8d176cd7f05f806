"""Landform classification from DEMs (Yang et al. 2023) as a QGIS Processing plugin.

``core`` holds the logic in plain numpy/GDAL/torch and never imports QGIS;
``processing`` holds the thin Processing provider and algorithms.
"""
