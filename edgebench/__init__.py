"""edgebench: fine-tune ResNet50 on CIFAR-10, export it to edge formats, prove each artifact still works."""

__version__ = "0.1.0"
