"""Finetune on Split-digits, task-IL evaluation: the lower bound beside NISPA
(the core finetune with NISPA's settings; `finetune_digits.py` is the replay-table one: one head trained over all classes, Adam, same MLP)."""
from clj.config import base_config
from clj.configs.ewc_digits import reg_config


def get_config():
    c = reg_config("finetune")
    del c["reg"]
    c.replay = base_config().replay  # the core finetune reads the (unused) replay block
    return c
