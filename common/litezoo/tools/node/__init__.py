"""The DICOM node (``litezoo serve``): receive series from a PACS or a modality, segment them with a bundle, send
the DICOM SEG back. ``spool`` (the work directory and its states), ``receiver`` (the Storage SCP), ``segmenter`` (a
series through the bundle, and its SEG), ``sender`` (C-STORE and back-off), ``service`` (the threads and the command).
"""
