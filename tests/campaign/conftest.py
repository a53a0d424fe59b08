"""The Orthanc PACS fixture of the DICOM tests, for the OHIF browser test."""

from tests.dicom.conftest import orthanc  # noqa: F401  (a fixture)
