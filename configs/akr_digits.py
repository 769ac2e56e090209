"""AKR (attentive knowledge replay on iCaRL) on Split-digits, class-IL B0 Inc2,
5 phases, 100 exemplars in total, 3 seeds vmapped; see configs/akr_common.py.

    python launch.py --config=configs/akr_digits.py --workdir=/tmp/akr_digits
    python launch.py --config=configs/akr_digits.py:mixup     # plain-mixup baseline
    python launch.py --config=configs/akr_digits.py:icarl     # iCaRL, same settings
"""
from clj.configs.akr_common import digits_config


def get_config(replay: str = "attentive"):
    return digits_config(replay or "attentive")
