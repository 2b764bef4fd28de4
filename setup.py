"""The one compiled piece: region-of-interest JPEG decoding (src/data/jpeg_roi.c, loaded with ctypes by
src/data/crops.py), built by `pip install` (`make venv`). It needs a C compiler and libjpeg(-turbo)'s headers
(Debian/Ubuntu: libjpeg-dev). Optional: without them the install goes on, and dataset.decode=reduced decodes whole
images (scaled in the DCT domain where the crop allows). Everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("src.data._jpeg_roi", sources=["src/data/jpeg_roi.c"], libraries=["jpeg"],
                             optional=True)])
