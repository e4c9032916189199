"""Helpers of the CMBSegmentation Slicer module.

Qt-free modules (``progressParsing``, ``commandBuilder``, ``runState``, ``volumeIO``, ``candidateTable``,
``resultImport``, ``reviewState``, ``reportExport``, ``backgroundProcess``, ``dependencies``' path search, and
``batchInputs`` and ``batchOutputs`` of the batch script ``Resources/Scripts/batchProcess.py``) only need MRML
classes from ``slicer`` and run unchanged inside Slicer and with the ``slicer-core`` wheel (CI).
``processRunner`` needs Qt and runs only inside Slicer. Nothing here is imported by Slicer as a module.
"""
