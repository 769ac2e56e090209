"""PODNet on Split-digits (bundled real 8x8 digits), class-IL B0 Inc2, 5 tasks.

CPU-sized version of PyCIL's PODNet protocol (``models/podnet.py``): the
small CNN (two conv stages, 32 and 64 channels, which give POD-spatial its two
maps; ``--config.model.name=resnet32 --config.model.num_blocks=1`` for
ResNet-8 and its three residual stages), SGD lr 0.1, momentum 0.9, wd 5e-4 in every task,
cosine per epoch over the task's epochs (PyCIL: 160), LSC with 10 proxies per
class, lambda_c 5, lambda_f 1, class-balanced finetuning of 5 epochs at lr
0.005 (PyCIL: 20), herding memory of 200 exemplars, NME evaluation (the
numbers PyCIL's PODNet reports; ``--config.cil.predict=cnn`` for the LSC).
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def get_config():
    c = base_config()
    c.method = "podnet"
    c.dataset = "digits"
    c.scenario.kind = "class_il"
    c.scenario.init_cls = 0
    c.scenario.increment = 2
    c.scenario.class_order = "seeded"
    c.scenario.class_order_seed = 1993
    c.model = ml_collections.ConfigDict(dict(name="small_cnn", width=32, feature_width=128, dtype="float32"))
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine"))
    c.train.epochs = 15
    c.train.batch_size = 32
    c.cil = section_config("cil", memory_size=200, update_lr=0.1, update_weight_decay=5e-4,
                           update_milestones=(), update_schedule="cosine", scheduler="cosine", predict="nme")
    c.podnet = section_config("podnet", ft_epochs=5)
    return c
