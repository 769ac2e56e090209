"""iCaRL on Split-digits (bundled real 8x8 digits), class-IL B0 Inc2, 5 tasks.

CPU-sized version of the PyCIL protocol: ResNet-8 (resnet32 family with one
block per stage), SGD momentum 0.9, two phases (task 0: lr 0.1 wd 5e-4;
later: lr 0.1 wd 2e-4, step decay), herding memory of the memory-aligned
("fair") byte budget: DER's T backbones + base_exemplars images.
Override the method with ``--config.method=wa|replay`` or use the sibling
configs.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def get_config(method: str = "icarl"):
    c = base_config()
    c.method = method
    c.dataset = "digits"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = 0
    c.scenario.increment = 2
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.model = ml_collections.ConfigDict(dict(name="resnet32", num_blocks=1, dtype="float32"))
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                        milestones=(12, 18), gamma=0.1))
    c.train.init_epochs = 20
    c.train.epochs = 15
    c.train.batch_size = 32
    c.cil = section_config("cil", budget="fair", base_exemplars=40, update_lr=0.1, update_weight_decay=2e-4,
                       update_milestones=(9, 13), update_schedule="multistep")
    return c
