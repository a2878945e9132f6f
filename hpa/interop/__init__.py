"""Bioimage interoperability: runs as GeoJSON (QuPath), OME-Zarr and napari layers.

:mod:`hpa.interop.geojson` and :mod:`hpa.interop.omezarr` are behind ``hpa export``;
:mod:`hpa.interop.napari` is the reader of the napari plugin (``napari.yaml``). They read
the artefacts of ``docs/artefacts.md`` and import neither stage's model code.
"""
