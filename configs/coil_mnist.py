"""coil on Split-MNIST (class-IL B0 Inc2, 5 tasks, seed-1993 class order),
CPU-sized: the side-by-side setting with PyCIL (docs/memo.md, "Coil").

MLP 784-100-100 (cosine classifier on its features), 2 epochs per task, batch
128, SGD lr 0.05 momentum 0.9 weight decay 5e-4 (constant), 200 herded
exemplars in total (PyCIL's ``memory_size // seen classes`` per class), new
data and memory shuffled together (``cil.batching="pycil"``), no
augmentation; the ``coil`` block's PyCIL defaults.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def get_config(method: str = "coil"):
    c = base_config()
    c.method = method
    c.dataset = "mnist"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = 0
    c.scenario.increment = 2
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(100, 100), dtype="float32"))
    c.optim.update(dict(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="constant"))
    c.train.init_epochs = 2
    c.train.epochs = 2
    c.train.batch_size = 128
    c.cil = section_config("cil", budget="fixed", memory_size=200, update_lr=0.05, update_weight_decay=5e-4,
                           update_milestones=(), update_schedule="constant", batching="pycil",
                           feature_batch_size=512)
    if method == "coil":
        c.coil = section_config("coil")
    return c
