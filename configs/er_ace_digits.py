"""ER-ACE on Split-digits, class-IL, 5 tasks of 2 classes (bundled real data)."""
from clj.config import base_config


def get_config():
    c = base_config()
    c.method = "er_ace"
    c.dataset = "digits"
    c.scenario.kind = "class_il"
    c.scenario.increment = 2
    c.model.name = "mlp"
    c.model.hidden = (100, 100)
    c.optim.lr = 0.1
    c.train.epochs = 5
    c.train.batch_size = 16
    c.replay.buffer_size = 200
    c.replay.minibatch_size = 16
    return c
