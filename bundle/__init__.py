"""Bundle stage (after bench): one artifact as a folder a device runs with infer.py or the C runner."""
