"""Training data: ``dataset`` reads labelled image sources (the functions export, bench, tune and bundle
call: ``load_dataset``, ``align_classes``, ``subset``, ``split_validation``, ``stratified_indices``);
``features`` caches a frozen network's features and augments; ``extractor`` runs the frozen trunk on another
runtime; ``progress`` is their progress bar."""
