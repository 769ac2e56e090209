"""MEMO on Fashion-MNIST B0 Inc2 (5 tasks), CPU-sized, offline.

Fashion-MNIST from Debian's dataset-fashion-mnist files
(/usr/share/datasets/fashion-mnist); 5% of the training images per class
(300), all test images; seed-1993 class order; ResNet-8 (the resnet32 family
with one block per stage; generalized = stem + stages 1-2, specialized =
stage 3); PyCIL's two-phase SGD (momentum 0.9, lr 0.1, wd 5e-4 then 2e-4,
step decay per epoch); PyCIL's batching (new data and memory shuffled
together into batches of B, ``cil.batching="pycil"``: run it through
``experiments/memo.py``, whose runner takes the step counts from the
method); the memory-aligned byte budget of DER with 5
backbones + 200 images (cil.budget="fair").  ``get_config("icarl")`` etc.
give the other methods at the same budget.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def get_config(method: str = "memo"):
    c = base_config()
    c.method = method
    c.dataset = "fashion_mnist"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = 0
    c.scenario.increment = 2
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.scenario.train_fraction = 0.05
    c.model = ml_collections.ConfigDict(dict(name="resnet32", num_blocks=1, dtype="float32"))
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                        milestones=(6, 9), gamma=0.1))
    c.augment.crop_pad = 2
    c.train.init_epochs = 10
    c.train.epochs = 8
    c.train.batch_size = 32
    c.cil = section_config("cil", budget="fair", base_exemplars=200, update_lr=0.1, update_weight_decay=2e-4,
                       update_milestones=(5, 7), update_schedule="multistep", train_base=True, batching="pycil")
    return c
