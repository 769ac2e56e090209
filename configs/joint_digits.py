"""Joint training (upper bound) on Split-digits: task t trains on tasks 0..t.

MLP 64-100-100-10, SGD lr 0.1, batch 16, 5 epochs per task; replay
minibatch 16; DER alpha 0.3, DER++ beta 0.5.
"""
from clj.config import base_config

def get_config():
    c = base_config()
    c.method = "joint"
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
    c.replay.alpha = 0.3
    c.replay.beta = 0.5
    return c
