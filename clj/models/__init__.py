"""Neural network models for clj (``flax.linen``).

All classifiers share the call signature::

    logits = model.apply(variables, x, train=False)                    # x [B,H,W,C] float32
    logits, feats = model.apply(variables, x, train=False, return_features=True)  # feats [B, D]
    (out, upd) = model.apply(variables, x, train=True, mutable=["batch_stats"])   # BN models

and two top-level submodules ``backbone`` and ``head`` (``nn.Dense(num_classes)``),
so ``variables["params"]`` has keys ``"backbone"`` and ``"head"``.
``model.feature_dim`` (or :func:`feature_dim`) gives D.
"""

from clj.models.cnn import SmallCNN, SmallCNNBackbone
from clj.models.common import batch_norm, classify, compute_dtype
from clj.models.mlp import MLP, MLPBackbone
from clj.models.registry import MODEL_NAMES, feature_dim, get_model, init_variables, is_conv
from clj.models.resnet import (
    RESNET32_FEATURE_DIM,
    RESNET_STEMS,
    BasicBlock,
    ResNet18,
    ResNet18Backbone,
    ResNet18Deep,
    ResNet18Shallow,
    ResNet32,
    ResNet32Backbone,
    ResNet32Deep,
    ResNet32Shallow,
    ResNetStage,
    resnet18_split_param_counts,
    resnet32_split_param_counts,
)
from clj.models.utils import count_params, param_bytes

__all__ = [
    "MLP",
    "MLPBackbone",
    "SmallCNN",
    "SmallCNNBackbone",
    "ResNet18",
    "ResNet18Backbone",
    "ResNet18Shallow",
    "ResNet18Deep",
    "RESNET_STEMS",
    "resnet18_split_param_counts",
    "ResNet32",
    "ResNet32Backbone",
    "ResNet32Shallow",
    "ResNet32Deep",
    "ResNetStage",
    "BasicBlock",
    "RESNET32_FEATURE_DIM",
    "resnet32_split_param_counts",
    "MODEL_NAMES",
    "get_model",
    "feature_dim",
    "init_variables",
    "is_conv",
    "count_params",
    "param_bytes",
    "batch_norm",
    "classify",
    "compute_dtype",
]
