"""Classification CNNs and vision transformers."""

from . import alexnet, googlenet, mobilenet, resnet, vgg, vit  # noqa: F401
