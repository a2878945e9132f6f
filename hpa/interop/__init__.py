"""Bioimage interoperability: runs for QuPath, Fiji, napari, CellProfiler and OME readers.

:mod:`hpa.interop.geojson` (cells for QuPath), :mod:`hpa.interop.ometiff` (the image as a
pyramidal OME-TIFF), :mod:`hpa.interop.imagej` (ImageJ ROI sets) and
:mod:`hpa.interop.omezarr` (image and labels as OME-Zarr, pyramids from
:mod:`hpa.interop.pyramid`) are behind ``hpa export``; :mod:`hpa.interop.napari` is the
reader of the napari plugin (``napari.yaml``) and :mod:`hpa.interop.napari_widget` its
widget that steps through a run's images. They read the artefacts of
``docs/artefacts.md`` and import neither stage's model code. :mod:`hpa.interop.bioimageio`
is behind ``hpa export-model``: a trained classifier as a bioimage.io model resource.
"""
