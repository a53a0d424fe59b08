"""DICOM: a Storage SCP that turns received series into datastore images, a DICOMweb source, SEG export."""
