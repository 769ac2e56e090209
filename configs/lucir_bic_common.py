"""Shared settings of the LUCIR and BiC configs (``docs/memo.md``, "LUCIR" and "BiC").

* :func:`digits_config`: Split-digits class-IL B0 Inc2 (5 tasks, seed-1993
  class order), MLP 100-100, SGD momentum 0.9, 5 epochs per task, batch 32,
  200 exemplars in total, PyCIL's batching: CPU-sized.
* :func:`seq_mnist_config`: Split-MNIST class-IL in label order (5 tasks of
  2), MLP 784-100-100, raw [0, 1] pixels, one epoch, 200 exemplars: the
  side-by-side runs with Mammoth (LUCIR: batch 10, plain SGD lr 0.1) and
  PyCIL (BiC: batch 32, SGD lr 0.05 momentum 0.9 wd 2e-4 in both stages).
* :func:`cifar_config`: the seed tables' CIFAR-100 rows (ResNet-32,
  seed-1993 order, batch 128, crop + flip, PyCIL's batching).  BiC: PyCIL's
  ``models/bic.py`` (170 epochs in every task, lr 0.1, wd 2e-4, steps at
  60/100/140, T = 2, split 0.1; stage 2 the same epochs and schedule) with
  the memory-aligned budget (``budget="fair"``, MEMO's Table 7) or 2000
  exemplars (``budget="fixed"``, the benchmark tables and AKR's).  LUCIR:
  the original code's CIFAR settings (160 epochs, lr 0.1 divided by 10 at
  80 and 120, wd 5e-4, 20 exemplars per class, lamda_base 5, K 2, m 0.5,
  weight imprinting, the paper's adaptive weight and growing head
  (``adaptive="classes"``, ``unseen="seen"``), no class-balanced finetuning).
  Needs CIFAR-100 prepared (``dataset="cifar100"``).
* :func:`imagenet_config`: BiC on ImageNet-100 (ResNet-18, 224 px prepared
  image folder ``imagenet100``, batch 128, PyCIL's BiC schedule).
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def _method_blocks(c, method: str, **over):
    if method == "lucir":
        c.lucir = section_config("lucir", **over)
    elif method == "bic":
        c.bic = section_config("bic", **over)
    else:
        raise ValueError(f"method={method!r} is unknown here; valid: lucir, bic.")
    return c


def digits_config(method: str):
    c = base_config()
    c.method = method
    c.dataset = "digits"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = 0
    c.scenario.increment = 2
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(100, 100), dtype="float32"))
    c.optim.update(dict(name="sgd", lr=0.05, momentum=0.9, weight_decay=2e-4, schedule="constant"))
    c.train.epochs = 5
    c.train.batch_size = 32
    c.cil = section_config("cil", budget="fixed", memory_size=200, update_lr=0.05, update_weight_decay=2e-4,
                           update_schedule="constant", batching="pycil")
    over = dict(stage2_epochs=5, stage2_milestones=(3,)) if method == "bic" else dict(finetune_epochs=5)
    return _method_blocks(c, method, **over)


def seq_mnist_config(method: str):
    c = base_config()
    c.method = method
    c.dataset = "mnist"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = 0
    c.scenario.increment = 2
    c.scenario.class_order = "fixed"
    # Flax's initialisation; Mammoth's MLP starts from weight_init="xavier_uniform"
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(100, 100), dtype="float32",
                                             weight_init="lecun_normal"))
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant"))
    c.train.epochs = 1
    c.train.batch_size = 10
    c.augment.normalize = False
    c.loop.eval_batch_size = 1000
    c.cil = section_config("cil", budget="fixed", memory_size=200, update_lr=0.1, update_weight_decay=0.0,
                           update_schedule="constant", batching="pycil")
    if method == "bic":  # PyCIL's BiC: SGD momentum 0.9, wd 2e-4 in both stages (here lr 0.05, batch 32)
        c.optim.update(dict(lr=0.05, momentum=0.9, weight_decay=2e-4))
        c.train.batch_size = 32
        c.cil.update_lr = 0.05
        c.cil.update_weight_decay = 2e-4
        return _method_blocks(c, method, stage2_epochs=1, stage2_lr=0.05, stage2_weight_decay=2e-4,
                              stage2_milestones=())
    return _method_blocks(c, method)


def cifar_config(method: str, init_cls: int, increment: int, budget: str = "fair"):
    c = base_config()
    c.method = method
    c.dataset = "cifar100"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = init_cls
    c.scenario.increment = increment
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.model = ml_collections.ConfigDict(dict(name="resnet32", num_blocks=5, dtype="float32"))
    c.augment.crop_pad = 4
    c.augment.flip = True
    c.train.batch_size = 128
    c.replay.buffer_size = 2000  # unused by these methods
    if method == "bic":
        c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4, schedule="multistep",
                            milestones=(60, 100, 140), gamma=0.1))
        c.train.init_epochs = 170
        c.train.epochs = 170
        c.cil = section_config("cil", budget=budget, memory_size=2000, base_exemplars=2000, update_lr=0.1,
                               update_weight_decay=2e-4, update_milestones=(60, 100, 140),
                               update_schedule="multistep", batching="pycil", kd_T=2.0)
        return _method_blocks(c, method, split_ratio=0.1, stage2_lr=0.1, stage2_weight_decay=2e-4,
                              stage2_milestones=(60, 100, 140))
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                        milestones=(80, 120), gamma=0.1))
    c.train.init_epochs = 160
    c.train.epochs = 160
    c.cil = section_config("cil", budget="fixed", fixed_memory=True, memory_per_class=20, update_lr=0.1,
                           update_weight_decay=5e-4, update_milestones=(80, 120), update_schedule="multistep",
                           batching="pycil")
    return _method_blocks(c, method, lamda_base=5.0, lamda_mr=1.0, k_mr=2, mr_margin=0.5, adaptive="classes",
                          unseen="seen", imprint=True, finetune_epochs=0)


def imagenet_config(method: str, init_cls: int, increment: int, budget: str = "fair"):
    if method != "bic":
        raise ValueError(f"method={method!r}: only bic has ImageNet-100 settings here.")
    c = cifar_config(method, init_cls, increment, budget)
    c.dataset = "imagenet100"  # python -m clj.data.prepare imagenet100 (PyCIL's class list, stored at 256)
    # ResNet-18 with the ImageNet stem; PyCIL's ImageNet transform (RandomResizedCrop(224) + flip;
    # resize 256 / centre crop 224 for evaluation)
    c.model = ml_collections.ConfigDict(dict(name="resnet18_imagenet", dtype="float32"))
    c.augment = ml_collections.ConfigDict(dict(preset="pycil_imagenet"))
    return c
