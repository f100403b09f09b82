"""Data layer: RSNA labels and DICOM series, the series cache, SPIDER volumes and the phantom."""
