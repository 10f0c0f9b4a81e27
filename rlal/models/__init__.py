"""The model zoo: CIFAR ResNets, ImageNet ResNets, MobileNetV2 and VGG-16-BN, written for this project.

Every model ends in adaptive average pooling and a single ``nn.Linear`` classifier named ``fc``, so it
accepts any input size the registry allows (1x28x28 Fashion-MNIST, 3x32x32 CIFAR, 3x224x224 ImageNet), and
every model traces through Torch-Pruning's ``DependencyGraph``.

    >>> model = create_model("resnet56", num_classes=10, in_channels=3, input_size=32)
    >>> macs, params = count_macs_params(model, (3, 32, 32))
"""

from rlal.models import mobilenetv2, resnet, vgg  # noqa: F401  (importing registers the builders)
from rlal.models.counting import count_macs_params
from rlal.models.registry import ModelEntry, create_model, list_models, model_entry, register_model

__all__ = ["ModelEntry", "count_macs_params", "create_model", "list_models", "model_entry", "register_model"]
