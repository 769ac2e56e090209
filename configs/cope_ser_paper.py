"""CoPE in SER's table (docs/ser.md, "Headline results": the CoPE row of
Split Mini-ImageNet, 20 tasks x 5 classes, one epoch, batch 8, buffer 2000,
ResNet-18): the protocol of ``configs/ser_derpp_paper.py`` (Split
Mini-ImageNet prepared with ``python -m clj.data.prepare mini_imagenet``;
``--config.dataset=fg_imagenet`` for Split FG-ImageNet) with CoPE's official CIFAR-100 settings (256-dim embedding, PPP temperature
0.05, prototype momentum 0.9) and SER's lr 0.01; 8 replayed per step.
CoPE uses neither the task id nor the boundaries.  Meant for an accelerator.

    python launch.py --config=configs/cope_ser_paper.py
    python launch.py --config=configs/cope_ser_paper.py --config.replay.buffer_size=1000   # or 5000
"""
from clj.configs.ser_derpp_paper import get_config as ser_config
from clj.methods.sections import section_config


def get_config():
    c = ser_config()
    c.method = "cope"
    del c["ser"]
    c.online = section_config("online", cope_dim=256, cope_temperature=0.05, cope_momentum=0.9, cope_iters=1)
    return c
