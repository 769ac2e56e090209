"""Finetune on Split-digits, task-IL evaluation: the lower bound beside NISPA
(the core finetune with NISPA's settings; `finetune_digits.py` is the replay-table one: one head trained over all classes, Adam, same MLP)."""
from configs.ewc_digits import reg_config


def get_config():
    c = reg_config("finetune")
    del c["reg"]
    return c
