"""File readers and writers of probdeconv (histpy/cosipy HDF5 layout)."""
