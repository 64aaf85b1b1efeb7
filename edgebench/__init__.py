"""edgebench: fine-tune an ImageNet ResNet50 on CIFAR-10, export it to edge formats, prove each still works."""

__version__ = "0.1.0"
